"""Ctrl-C and ``kill``: stop at once, take the worker processes along, say how to resume.

nipype's MultiProc waits for the nodes that are running before it lets an interrupt through
(a minute or more in a registration or a sampler), and a main process that is killed leaves its
workers running. Here the main process, on SIGINT or SIGTERM, terminates its worker processes
itself, then unwinds with :class:`Interrupted`; the work directory keeps every finished node,
so the same command resumes. A worker that gets the signal (Ctrl-C reaches the whole process
group) simply dies, as a process without this handler would.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 2.0


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number (130 for Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def stop_children(grace_s: float = GRACE_S) -> None:
    """SIGTERM to every child process, SIGKILL to those still alive after ``grace_s``."""
    children = multiprocessing.active_children()
    for child in children:
        with contextlib.suppress(OSError):
            child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            with contextlib.suppress(OSError):
                child.kill()
            child.join(1.0)


@contextlib.contextmanager
def handle_signals():
    """Within the block, SIGINT and SIGTERM stop the workers and raise :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:  # a forked worker: die as if no handler were installed
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for sig in SIGNALS:  # a second Ctrl-C while stopping must not interrupt the cleanup
            signal.signal(sig, signal.SIG_IGN)
        stop_children()
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
