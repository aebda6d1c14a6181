"""Thin nipype interfaces: each reads files, calls plain functions, writes files in its cwd."""

import logging
import sys


def nipype_logs_to_stderr() -> None:
    """Point nipype's log handler at stderr: nipype writes its records to stdout, where a BIDS
    App's stdout carries only the paths of what it wrote (``bids_usb ... 2>/dev/null``). Called
    by ``config.apply`` in the main process and on import here, which runs in every worker
    before the node's interface does (the interface class is unpickled there)."""
    for handler in logging.getLogger("nipype").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.stderr)


nipype_logs_to_stderr()
