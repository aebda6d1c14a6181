"""One run per participant and work directory at a time.

Two runs of the same participants on one work directory race inside nipype's cache (one
crashes on a half-written result, the other waits on it for ever). Each run takes an exclusive
``flock`` per participant in ``<work_dir>/locks/`` before it builds its workflow, and refuses
at once (73) when another run holds one. Runs of different participants (an array job sharing a
work directory) do not block each other. The kernel drops the locks when a run dies, however it
dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import CannotCreateOutput


class WorkLock:
    def __init__(self, handles: list):
        self._handles = handles

    @classmethod
    def acquire(cls, work_dir: Path, subjects: Iterable[str]) -> WorkLock:
        folder = Path(work_dir) / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        handles = []
        try:
            for subject in sorted(set(subjects)):
                path = folder / f"sub-{subject}.lock"
                handle = open(path, "a+")  # noqa: SIM115 - held for the whole run
                handles.append(handle)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    owner = handle.read().strip() or "another process"
                    raise CannotCreateOutput(
                        f"{work_dir}: sub-{subject} is being processed by another bids_usb run ({owner}) on this work "
                        "directory; wait for it to finish, or give this run its own -w/--work-dir"
                    ) from None
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
                handle.flush()
        except BaseException:
            for handle in handles:
                handle.close()
            raise
        return cls(handles)

    def release(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles = []

    def __enter__(self) -> WorkLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
