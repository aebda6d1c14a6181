"""The pybids index of a dataset, built once and shared (``--bids-database-dir``, fMRIPrep's option).

Without it every run (every task of a SLURM array) walks the whole dataset with pybids before it
selects its one participant; with it the first run writes pybids' SQLite index
(``layout_index.sqlite``) into the directory and the later runs open it. Several tasks that start
together take an exclusive ``flock`` on ``<dir>/.bids_usb.lock``: one builds the index (into a
temporary folder, renamed into place when complete, so a run killed while indexing leaves no
half-written index), the others wait for it and reuse it.

The index is kept with a note of what it was built from (``bids_usb_index.json``: the dataset's
root and the indexing settings, ``validate=False`` so lesion ``_roi`` files stay, metadata
indexed). An index of another dataset, or one bids_usb did not build (``pybids layout`` indexes
with validation on by default, which drops those files), is refused with one line (64).
The index does not follow changes to the dataset: delete the directory after adding or renaming
files, and the next run builds it again.

``python -m bids_usb.database BIDS_DIR DB_DIR`` builds it (or checks it) and prints its path: the
first step of the array recipe, after the validator.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import BidsUsbError, CannotCreateOutput, UsageError

#: The pybids configurations every layout of a raw dataset is built with (label/desc parsed).
CONFIG = ["bids", "derivatives"]
INDEX_FILE = "layout_index.sqlite"  # pybids' file name inside database_path
NOTE_FILE = "bids_usb_index.json"
LOCK_FILE = ".bids_usb.lock"


def build_layout(root: str | os.PathLike, database_path: str | os.PathLike | None = None):
    """A pybids layout of ``root`` with the raw and derivatives entities, without validation
    (lesion ``_roi`` files and derivatives are kept); indexed into ``database_path`` if given."""
    from bids import BIDSLayout

    kwargs = {"database_path": str(database_path)} if database_path is not None else {}
    return BIDSLayout(str(root), validate=False, config=list(CONFIG), **kwargs)


def _note(root: Path) -> dict:
    import bids

    return {"root": str(root), "validate": False, "config": CONFIG, "index_metadata": True, "pybids": bids.__version__}


def check_database_dir(bids_dir: str | os.PathLike, database_dir: str | os.PathLike) -> Path:
    """The directory resolved; refuses one inside the dataset (nothing is written there), a
    path that is a file, and one that cannot be created."""
    bids = Path(bids_dir).expanduser().resolve()
    db = Path(database_dir).expanduser().absolute()
    if db.resolve() == bids or db.resolve().is_relative_to(bids):
        raise UsageError(
            f"--bids-database-dir {database_dir} lies inside the BIDS dataset {bids}; nothing is written into the "
            "input dataset: give a directory outside it (e.g. /scratch/bids_db)"
        )
    if db.exists() and not db.is_dir():
        raise UsageError(f"--bids-database-dir {database_dir} is not a directory; give a directory (created if absent)")
    try:
        db.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CannotCreateOutput(
            f"--bids-database-dir {database_dir} cannot be created ({exc.strerror or exc}); give a writable directory"
        ) from exc
    if not os.access(db, os.W_OK | os.X_OK):
        raise CannotCreateOutput(f"--bids-database-dir {database_dir} is not writable; give a writable directory")
    return db.resolve()


def _check_note(db: Path, root: Path) -> None:
    try:
        note = json.loads((db / NOTE_FILE).read_text())
    except FileNotFoundError:
        raise UsageError(
            f"--bids-database-dir {db} holds a pybids index that bids_usb did not build (no {NOTE_FILE}); "
            "give an empty or new directory, and bids_usb builds its own"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--bids-database-dir {db}: {NOTE_FILE} cannot be read ({exc}); delete the directory") from exc
    if note.get("root") != str(root):
        raise UsageError(
            f"--bids-database-dir {db} indexes another dataset ({note.get('root')}), not {root}; "
            "give each dataset its own directory"
        )
    wanted = _note(root)
    if {k: note.get(k) for k in ("validate", "config", "index_metadata")} != {
        k: wanted[k] for k in ("validate", "config", "index_metadata")
    }:
        raise UsageError(f"--bids-database-dir {db} was indexed with other settings; delete the directory")


def shared_layout(root: str | os.PathLike, database_dir: str | os.PathLike) -> tuple[object, bool]:
    """``(layout, built)``: the layout of ``root`` from the index in ``database_dir``, built
    there first (by this run, ``built`` True) where it does not exist yet."""
    root = Path(root).expanduser().resolve()
    db = Path(database_dir)
    built = False
    if not (db / INDEX_FILE).is_file():
        with open(db / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another task building it: wait, then reuse its index
            if not (db / INDEX_FILE).is_file():
                tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=db))
                try:
                    build_layout(root, tmp)
                    (tmp / NOTE_FILE).write_text(json.dumps(_note(root), indent=2) + "\n")
                    os.replace(tmp / NOTE_FILE, db / NOTE_FILE)
                    os.replace(tmp / INDEX_FILE, db / INDEX_FILE)  # last: the index exists only when complete
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                built = True
    _check_note(db, root)
    try:
        layout = build_layout(root, db)
    except Exception as exc:  # sqlite or pybids refusing the file
        raise UsageError(
            f"--bids-database-dir {db}: the index cannot be read ({exc.__class__.__name__}: {exc}); delete the directory"
        ) from exc
    return layout, built


def main(argv: list[str] | None = None) -> int:
    """``python -m bids_usb.database BIDS_DIR DB_DIR``: build (or check) the shared index."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print("usage: python -m bids_usb.database BIDS_DIR DB_DIR", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else UsageError.exit_code
    bids_dir, database_dir = args
    try:
        if not Path(bids_dir).is_dir():
            raise UsageError(f"bids_dir {bids_dir} is not a directory")
        db = check_database_dir(bids_dir, database_dir)
        layout, built = shared_layout(bids_dir, db)
    except BidsUsbError as exc:
        print(f"bids_usb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    subjects = len(layout.get_subjects())
    print(
        f"{'built' if built else 'reused'} the index of {subjects} participant(s): {db / INDEX_FILE}", file=sys.stderr
    )
    print(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
