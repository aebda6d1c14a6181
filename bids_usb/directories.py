"""Checks on the folders a run reads and writes: the input dataset, output_dir and work_dir.

Run before anything else, so that a bad path costs one line and an exit code, never a
half-written folder: nothing is ever written into the raw dataset (outputs go outside it or
below its ``derivatives/``), and a folder this run created is removed again when it stops early.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import CannotCreateOutput, NoInput, UsageError, ValidationFailed

__all__ = [
    "check_output_dataset",
    "check_output_dir",
    "check_work_dir",
    "create_dir",
    "dataset_check",
    "remove_empty_dirs",
]


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_output_dir(bids_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Refuse an output directory that would write into the raw dataset.

    Allowed: anywhere outside ``bids_dir``, or strictly below ``bids_dir/derivatives/``.
    Returns the resolved output directory.
    """
    bids = _resolved(bids_dir)
    out = _resolved(output_dir)
    if out == bids:
        raise UsageError(
            f"output_dir {output_dir} is the BIDS dataset itself ({bids}); "
            f"give a separate folder, e.g. {bids / 'derivatives' / 'bids_usb'}"
        )
    if out.is_relative_to(bids):
        derivs = bids / "derivatives"
        if out == derivs or not out.is_relative_to(derivs):
            raise UsageError(
                f"output_dir {output_dir} ({out}) lies inside the BIDS dataset {bids}; "
                f"outputs may only go below {derivs}/ (e.g. {derivs / 'bids_usb'}) "
                "or outside the dataset"
            )
    return out


def check_work_dir(bids_dir: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """Refuse a working directory inside (or equal to) the BIDS dataset; returns it resolved."""
    bids = _resolved(bids_dir)
    work = _resolved(work_dir)
    if work == bids or work.is_relative_to(bids):
        raise UsageError(
            f"work_dir {work_dir} ({work}) lies inside the BIDS dataset {bids}; "
            "give a working directory outside it (e.g. -w /tmp/bids_usb_work)"
        )
    return work


def check_output_dataset(output_dir: str | os.PathLike) -> None:
    """Refuse an output directory that holds another tool's dataset, or a description nobody can read.

    bids_usb adds files to its own derivatives (other participants, other runs); writing into a
    dataset that another pipeline generated would overwrite that pipeline's masks and images.
    """
    desc = Path(output_dir) / "dataset_description.json"
    if not desc.exists():
        return
    try:
        content = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{desc} cannot be read as JSON ({exc.__class__.__name__}), so whose dataset this is cannot be told; "
            "fix it, or remove it if the folder holds only bids_usb outputs (a new one is written)"
        ) from exc
    generated = content.get("GeneratedBy") if isinstance(content, dict) else None
    names = [g.get("Name") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []
    if "bids_usb" not in names:
        other = ", ".join(str(n) for n in names if n) or "no GeneratedBy"
        raise UsageError(
            f"output_dir {output_dir} already holds another dataset ({desc} names {other}); bids_usb would "
            f"overwrite its files. Give a folder of its own, e.g. {Path(output_dir).parent / 'bids_usb'}"
        )


def create_dir(path: str | os.PathLike, what: str) -> list[Path]:
    """Create ``path`` (and its parents) and check that files can be written there (exit 73).

    Returns the directories this call created, deepest last, so that a run that stops before
    writing anything can remove them again.
    """
    path = Path(path)
    made = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        made.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bids_usb_write_test_"):
            pass
    except OSError as exc:
        remove_empty_dirs(reversed(made))
        reason = exc.strerror or exc.__class__.__name__
        raise CannotCreateOutput(
            f"{what} {path} cannot be created or written to ({reason}); give a folder you can write to"
        ) from exc
    return list(reversed(made))


def remove_empty_dirs(paths: Iterable[Path]) -> None:
    """Remove the given directories, deepest first, where they are still empty."""
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass


def dataset_check(bids_dir: str | os.PathLike) -> Path:
    """Cheap checks on the input dataset before anything else runs; returns the resolved path.

    * not a directory -> :class:`UsageError` (64)
    * no (or unreadable) ``dataset_description.json`` -> :class:`ValidationFailed` (16)
    * no ``sub-<label>`` folder -> :class:`NoInput` (66)
    """
    path = Path(bids_dir).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise UsageError(f"bids_dir {bids_dir} {what}; give the root folder of a BIDS dataset")
    root = path.resolve()
    desc = root / "dataset_description.json"
    if not desc.is_file():
        raise ValidationFailed(
            f"{root} has no dataset_description.json, so it is not a BIDS dataset; "
            "add a dataset_description.json or pass --skip-bids-validation"
        )
    try:
        content = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"{desc} cannot be read as JSON ({exc}); fix it or pass --skip-bids-validation") from exc
    if not isinstance(content, dict):
        raise ValidationFailed(
            f"{desc} holds a JSON {type(content).__name__}, not an object; fix it or pass --skip-bids-validation"
        )
    if not any(p.is_dir() and p.name.startswith("sub-") for p in root.iterdir()):
        raise NoInput(f"{root} has no sub-<label> folders: there is nothing to process")
    return root
