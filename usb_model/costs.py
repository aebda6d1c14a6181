"""What one edit costs, stage by stage: wall seconds, peak resident memory, autoencoder passes.

``CostLog`` is handed to ``USB`` (``USB(..., costs=CostLog())``); the tasks record each stage
(``with costs.stage("encode input"):``) and each autoencoder pass (which network half, the
shape it ran on, how many voxels that covered). Peak memory per stage is the process's resident
high-water mark, reset at the start of the stage where Linux allows it (``/proc/self/clear_refs``),
so each stage reports its own peak rather than the run's. Nothing here changes a result.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's resident high-water mark (Linux >= 4.0); False where not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The resident high-water mark since the last ``reset_peak`` (or since the start)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: the whole process's peak
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024.0


@dataclass
class CostLog:
    stages: list[dict] = field(default_factory=list)
    passes: list[dict] = field(default_factory=list)

    @contextlib.contextmanager
    def stage(self, name: str):
        reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append({"stage": name, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()})

    def ae_pass(self, kind: str, shape, batch: int = 1, *, region: str = "full", tiles: int = 1) -> None:
        """One autoencoder pass: ``kind`` encode/decode, ``shape`` the image-space box it covered."""
        voxels = 1
        for s in shape:
            voxels *= int(s)
        self.passes.append(
            {
                "kind": kind,
                "region": region,
                "shape": [int(s) for s in shape],
                "batch": int(batch),
                "voxels": voxels * int(batch),
                "tiles": int(tiles),
            }
        )

    def summary(self) -> dict:
        return {
            "stages": self.stages,
            "passes": self.passes,
            "n_passes": sum(p["batch"] for p in self.passes),
            "ae_voxels": sum(p["voxels"] for p in self.passes),
            "peak_rss_mb": max((s["peak_rss_mb"] for s in self.stages), default=peak_rss_mb()),
        }


class NoCosts(CostLog):
    """The default: records nothing (the stage context still runs its body)."""

    @contextlib.contextmanager
    def stage(self, name: str):
        yield

    def ae_pass(self, *args, **kwargs) -> None:
        return None
