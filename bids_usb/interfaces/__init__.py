"""Thin nipype interfaces: each reads files, calls plain functions, writes files in its cwd."""

import logging
import sys


class _Stderr:
    """Whatever ``sys.stderr`` is when a record is written, not when the handler was pointed
    here: a stream captured once outlives it when the caller swaps stderr (a test's capture, a
    redirected run) and a later record would be written to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def nipype_logs_to_stderr() -> None:
    """Point nipype's log handler at stderr: nipype writes its records to stdout, where a BIDS
    App's stdout carries only the paths of what it wrote (``bids_usb ... 2>/dev/null``). Called
    by ``config.apply`` in the main process and on import here, which runs in every worker
    before the node's interface does (the interface class is unpickled there)."""
    for handler in logging.getLogger("nipype").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            with handler.lock:  # not setStream: it flushes the old stream, which may be closed
                handler.stream = _Stderr()


nipype_logs_to_stderr()
