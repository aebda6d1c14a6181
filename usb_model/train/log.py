"""The loss log: a TSV with one row per logged step, appended a whole line at a time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# "anchor" (training.vae_latent_anchor) came last, 2026-12-07: a log begun before it keeps its own
# header, and its rows are written in that header's columns.
LOG_COLUMNS = ("stage", "step", "loss", "recon", "kl", "adv", "perceptual", "disc", "lr", "seconds", "anchor")


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def append_log(path: Path, row: dict[str, Any]) -> None:
    """One line per write, flushed and synced, so a crash leaves whole lines only."""
    new = not path.is_file() or path.stat().st_size == 0
    columns = LOG_COLUMNS if new else _header(path)
    line = "\t".join(format_cell(row.get(c)) for c in columns) + "\n"
    with open(path, "a") as fh:
        fh.write(("\t".join(LOG_COLUMNS) + "\n" if new else "") + line)
        fh.flush()
        os.fsync(fh.fileno())


def _header(path: Path) -> tuple[str, ...]:
    with open(path) as fh:
        return tuple(fh.readline().rstrip("\n").split("\t"))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The log as dicts (numbers parsed, empty cells None), e.g. to plot training curves."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t")))
        row: dict[str, Any] = {}
        for key, cell in cells.items():
            if key == "stage":
                row[key] = cell
            elif key == "step":
                row[key] = int(cell)
            else:
                row[key] = float(cell) if cell else None
        rows.append(row)
    return rows


def truncate_log(path: Path, progress: dict[str, int]) -> None:
    """Drop rows logged after the saved state (a crash between a save and the next one)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    kept = [lines[0]]
    width = len(lines[0].rstrip("\n").split("\t"))
    for line in lines[1:]:
        cells = line.rstrip("\n").split("\t")
        if len(cells) == width and cells[0] in progress and int(cells[1]) <= progress[cells[0]]:
            kept.append(line)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
