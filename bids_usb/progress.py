"""Progress on stderr while a workflow runs, through nipype's own ``status_callback``.

A participant run spends minutes in a few nodes (N4, skull stripping, registration, the
sampler); without a line per finished node it looks hung. The lines go to the ``bids_usb``
logger (stderr), so stdout keeps only the report paths a script may read.

nipype calls the callback with ``"start"`` only for the nodes it hands to a worker. A node run
on the master thread (``run_without_submitting``: the sinks, the merges) and a node restored
from the cache get ``"end"`` alone; their time is the one nipype recorded in the node's result
(``runtime.duration``), and a node whose result predates this run is reported as cached.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

log = logging.getLogger("bids_usb.progress")


class NodeProgress:
    """``plugin_args["status_callback"]``: one log line per node that ends, with a count."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.started: dict[str, float] = {}
        self.since = datetime.now(timezone.utc).replace(tzinfo=None)  # nipype's runtime times are naive UTC

    def __call__(self, node, status: str) -> None:
        name = node.fullname.split(".", 1)[-1]
        if status == "start":
            self.started[name] = time.monotonic()
            return
        self.done += 1
        word = "failed" if status == "exception" else "done"
        if name in self.started:
            took: float | None = time.monotonic() - self.started.pop(name)
        else:
            took, cached = self._recorded(node)
            word = "cached" if cached and word == "done" else word
        if took is None:
            log.info("[%d/%d] %s %s", self.done, self.total, name, word)
        else:
            log.info("[%d/%d] %s %s (%.1f s)", self.done, self.total, name, word, took)

    def _recorded(self, node) -> tuple[float | None, bool]:
        """A node without a ``"start"``: (its recorded duration or None, whether it is cached)."""
        try:
            runtime = node.result.runtime
            runtime = runtime[0] if isinstance(runtime, list) else runtime
            ended = datetime.fromisoformat(str(runtime.endTime)).replace(tzinfo=None)
            duration = float(runtime.duration)
        except Exception:  # noqa: BLE001 - no result (a failure) or one without times: no figure
            return None, False
        if ended < self.since:
            return None, True
        return max(duration, 0.0), False


def count_nodes(workflow) -> int:
    """The nodes a run will execute (the flattened graph, iterables not expanded)."""
    return len(workflow._create_flat_graph().nodes())  # nipype has no public count
