"""The group level: ``bids_usb BIDS_DIR OUTPUT_DIR group --group-task train|metrics|generate``.

- ``train``    (``bids_usb.group.train``): preprocess the cohort's healthy brains with the
  participant level's chain and train a USB model on them; writes ``OUTPUT_DIR/models/<name>/``.
- ``metrics``  (``bids_usb.group.metrics``): judge the participant level's outputs against a
  ground truth; writes ``group_usb.tsv``, ``group_usb.json`` and ``group.html``.
- ``generate`` (``bids_usb.group.generate``): a synthetic cohort from a trained model, written
  as a new BIDS dataset in ``OUTPUT_DIR``.

``run_group(opts)`` takes the dict of parsed command-line options and returns the exit code;
failures raise ``bids_usb.errors`` classes (the CLI turns them into one line and an exit code).
See docs/group.md.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

TASKS = ("train", "metrics", "generate")


def run_group(opts: dict[str, Any]) -> int:
    task = opts.get("group_task")
    if task is None:
        raise UsageError("the group level needs a task: add --group-task train, --group-task metrics or --group-task generate")
    if opts.get("omp_nthreads"):  # PyTorch's threads in this process (training, generation)
        import torch

        torch.set_num_threads(int(opts["omp_nthreads"]))
    if task == "train":
        from .train import run_train

        return run_train(opts)
    if task == "metrics":
        from .metrics import run_metrics

        return run_metrics(opts)
    if task == "generate":
        from .generate import run_generate

        return run_generate(opts)
    raise UsageError(f"--group-task {task!r} is unknown; use one of: {', '.join(TASKS)}")


__all__ = ["TASKS", "run_group"]
