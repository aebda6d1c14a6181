"""Helpers shared by the group tasks: paths, configs, the .bidsignore, JSON with infinities."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ..errors import UsageError

log = logging.getLogger("bids_usb.group")

#: What the group level writes at the output root besides the participants' derivatives; the
#: BIDS validator is told to skip it.
GROUP_BIDSIGNORE = ("models/", "group_usb.tsv", "group_usb.json", "group/")


def say(message: str) -> None:
    """Progress for the user, on stderr through the logger (stdout carries only output paths)."""
    log.info("%s", message)


def warn(message: str) -> None:
    log.warning("%s", message)


def written(path) -> None:
    """The path of something this run wrote, on stdout (flushed: torchrun and cluster logs
    interleave), the one thing scripts read from a BIDS App's stdout."""
    print(path, flush=True)


def add_bidsignore(output_dir: Path, entries=GROUP_BIDSIGNORE) -> None:
    """Append the group outputs to ``output_dir/.bidsignore`` (once each)."""
    from ..derivatives import write_text

    path = Path(output_dir) / ".bidsignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    missing = [e for e in entries if e not in lines]
    if missing:
        write_text("\n".join([*[line for line in lines if line], *missing, ""]), path)


def check_name(name: str, option: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise UsageError(f"{option} {name!r}: use letters, digits, '.', '_' or '-' (it names a folder)")
    return name


def load_config(preset: str | None):
    """A preset name or a config JSON (``--preset``) -> USBConfig, or a usage error."""
    from usb_model.config import list_presets
    from usb_model.config import load_config as _load

    text = preset or "demo"
    try:
        cfg = _load(text)
        cfg.latent_shape  # noqa: B018 - checks that the grid fits the autoencoder
    except FileNotFoundError as exc:
        raise UsageError(
            f"--preset {text}: {exc}; give a preset ({', '.join(list_presets())}) or a config JSON"
        ) from exc
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--preset {text}: {exc}") from exc
    return cfg


def pick_device(text: str):
    from usb_model.device import pick_device as _pick

    try:
        return _pick(text)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--device {text}: {exc}") from exc


def finite_or_text(value: Any) -> Any:
    """JSON has no infinities: +-inf become the strings "inf"/"-inf", nan becomes null."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_text(v) for v in value]
    return value


def tsv_cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)
