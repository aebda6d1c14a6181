"""Progress on stderr while a workflow runs, through nipype's own ``status_callback``.

A participant run spends minutes in a few nodes (N4, skull stripping, registration, the
sampler); without a line per finished node it looks hung. The lines go to the ``bids_usb``
logger (stderr), so stdout keeps only the report paths a script may read.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("bids_usb.progress")


class NodeProgress:
    """``plugin_args["status_callback"]``: one log line per node that ends, with a count."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.started: dict[str, float] = {}

    def __call__(self, node, status: str) -> None:
        name = node.fullname.split(".", 1)[-1]
        if status == "start":
            self.started[name] = time.monotonic()
            return
        self.done += 1
        took = time.monotonic() - self.started.pop(name, time.monotonic())
        word = "failed" if status == "exception" else "done"
        log.info("[%d/%d] %s %s (%.1f s)", self.done, self.total, name, word, took)


def count_nodes(workflow) -> int:
    """The nodes a run will execute (the flattened graph, iterables not expanded)."""
    return len(workflow._create_flat_graph().nodes())  # nipype has no public count
