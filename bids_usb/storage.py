"""Inputs and outputs as real storage holds them: symlinked files, annexed content, full disks.

Cluster stores and DataLad datasets hold files as symlinks (DataLad: relative links into
``.git/annex/objects``, whose content may not have been fetched yet). The dataset's own names
are what BIDS URIs and output names must carry, so nothing here follows a link to name a file;
reading goes through the link as usual. A link that points nowhere is a missing input (66),
told apart from a corrupt file, because the fix is ``datalad get``, not a new conversion.

A full file system or an exceeded quota is an I/O failure (74): one line that names the
directory, because what the user must do is free space there and run again (the work directory
keeps what was done, and outputs are written atomically, so nothing partial is left).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import IOFailure, NoInput

log = logging.getLogger("bids_usb")

# git-annex in "unlocked" mode (and on file systems without links) leaves a small pointer file
# whose text names the key instead of a symlink.
ANNEX_POINTER = b"/annex/objects/"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Output and work space one image needs (MB), measured with the demo model on the quickstart's
# two 1.2 mm synthetic T1w of 167 x 207 x 180 voxels (``du -sm``: 62 MB of work directory and 14 MB
# of outputs for both), scaled by an image's voxels relative to those.
MB_PER_IMAGE = 38.0
MEASURED_VOXELS = 167 * 207 * 180


def dataset_path(bids_dir: str | os.PathLike, path: str | os.PathLike) -> PurePosixPath:
    """``path`` relative to ``bids_dir`` as the dataset names it, symlinks not followed.

    The parent folders may be reached through a link (``bids_dir`` itself given as a link, or
    resolved by the caller), so the containing folder is resolved when the plain names do not
    match; the file's own link never is.
    """
    root, file = Path(os.path.abspath(bids_dir)), Path(os.path.abspath(path))
    for base, candidate in ((root, file), (root.resolve(), file.parent.resolve() / file.name)):
        try:
            return PurePosixPath(candidate.relative_to(base).as_posix())
        except ValueError:
            continue
    raise ValueError(f"{path} is not inside {bids_dir}")


def absent_content(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` has no content to read (a dangling link, an annex pointer), or None."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        target = os.readlink(path)
        if "annex/objects" in target:
            return f"is an annexed file whose content is not here (its link points to {target})"
        return f"is a symlink to {target}, which does not exist"
    try:
        if path.is_file() and path.stat().st_size < 1024:
            with open(path, "rb") as fh:
                if fh.read(len(ANNEX_POINTER)) == ANNEX_POINTER:
                    return "is an annex pointer file (its content is not here)"
    except OSError:
        return None
    return None


def check_content(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse (66) a file whose content is not on this machine, with the fix in the message."""
    why = absent_content(path)
    if why is not None:
        raise NoInput(
            f"{path}: the {what} {why}; if the dataset is a DataLad dataset, fetch it with `datalad get {path}`, "
            "otherwise restore the file the link points to"
        )


def check_dataset_links(bids_dir: Path, subjects: Iterable[str] | None = None) -> None:
    """Every NIfTI of the selected participants has its content here (66 otherwise), checked
    before validation: the validator reads a dangling link as a corrupt file."""
    folders = [bids_dir / f"sub-{s}" for s in subjects] if subjects else sorted(bids_dir.glob("sub-*"))
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in sorted(filenames):
                if name.endswith((".nii", ".nii.gz")):
                    check_content(Path(dirpath) / name, "image")


def is_disk_full(exc: BaseException) -> bool:
    """An ``OSError`` (anywhere in the cause chain) that says the disk or the quota is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(directory: Path, exc: BaseException | None = None) -> IOFailure:
    why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "no space left on device"
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return IOFailure(
        f"{directory}: {why.lower()}{where}; free space there (or give --work-dir / an output directory on "
        "another file system) and run the same command again to resume: nothing partial was written"
    )


def disk_full_in_crashes(crash_dir: Path, since: float) -> bool:
    """Whether a node that crashed in this run failed on a full disk or quota (its crash file
    names ``Errno 28`` or ``Errno 122``)."""
    if not crash_dir.is_dir():
        return False
    marks = [f"[Errno {code}]" for code in DISK_FULL]
    for crash in crash_dir.glob("crash-*.txt"):
        if crash.stat().st_mtime >= since - 1 and any(m in crash.read_text(errors="replace") for m in marks):
            return True
    return False


def needed_mb(n_voxels: Iterable[int]) -> float:
    return sum(MB_PER_IMAGE * max(n / MEASURED_VOXELS, 0.05) for n in n_voxels)


def free_bytes(directory: Path) -> tuple[int, float] | None:
    """``(device, free bytes)`` of the file system ``directory`` is on (or will be, once created)."""
    probe = Path(directory)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return probe.stat().st_dev, float(shutil.disk_usage(probe).free)
    except OSError:
        return None


def warn_if_short(directories: Iterable[Path], need_mb: float) -> list[str]:
    """A one-line warning per file system with less free space than the run needs; the run goes
    on (the estimate is rough, and a resumed run needs less)."""
    messages, seen = [], set()
    for directory in directories:
        found = free_bytes(directory)
        if found is None or found[0] in seen:
            continue
        seen.add(found[0])
        free = found[1] / 2**20
        if free < need_mb:
            messages.append(
                f"{directory}: {free:.0f} MB free, and this run needs about {need_mb:.0f} MB for its outputs and "
                "work directory; it may stop with 'no space left on device'"
            )
    for message in messages:
        log.warning(message)
    return messages


class DiskWatch:
    """Ends a run whose output or work file system has filled up, instead of letting it hang.

    nipype's MultiProc cannot store a node's result on a full work directory; it logs "Storing
    result file without outputs" and waits for ever for a result that never comes. This thread
    polls the free space of the run's directories; when one stays below ``min_free_mb`` for
    ``patience_s`` it notes the directory and sends the run SIGTERM, which stops the workers
    (``interrupt.handle_signals``); the caller turns that into the one-line exit 74.
    """

    def __init__(self, directories: Iterable[Path], min_free_mb: float = 1.0, patience_s: float = 10.0, every_s=1.0):
        self.directories = [Path(d) for d in directories]
        self.min_free = min_free_mb * 2**20
        self.patience_s, self.every_s = patience_s, every_s
        self.full: Path | None = None
        self._stop = None

    def _watch(self) -> None:
        import signal
        import time

        low_since: dict[Path, float] = {}
        while not self._stop.wait(self.every_s):
            now = time.monotonic()
            for directory in self.directories:
                found = free_bytes(directory)
                free = found[1] if found else None
                if free is None or free >= self.min_free:
                    low_since.pop(directory, None)
                    continue
                if now - low_since.setdefault(directory, now) >= self.patience_s:
                    self.full = directory
                    log.error("%s: the file system is full (%.0f kB free); stopping the run", directory, free / 1024)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def __enter__(self) -> DiskWatch:
        import threading

        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="bids_usb-diskwatch", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
