"""The group level: ``bids_usb BIDS_DIR OUTPUT_DIR group --group-task train|metrics|generate``.

- ``train``    (``bids_usb.group.train``): preprocess the cohort's healthy brains with the
  participant level's chain and train a USB model on them; writes ``OUTPUT_DIR/models/<name>/``.
- ``metrics``  (``bids_usb.group.metrics``): judge the participant level's outputs against a
  ground truth; writes ``group_usb.tsv``, ``group_usb.json`` and ``group.html``.
- ``generate`` (``bids_usb.group.generate``): a synthetic cohort from a trained model, written
  as a new BIDS dataset in ``OUTPUT_DIR``.

``run_group(config)`` takes the run configuration (``bids_usb.config``) and returns the exit code;
failures raise ``bids_usb.errors`` classes (the CLI turns them into one line and an exit code).
See docs/group.md.
"""

from __future__ import annotations

from ..config import GROUP_TASKS as TASKS
from ..config import RunConfig
from ..errors import UsageError


def run_group(config: RunConfig) -> int:
    task = config.group.task
    if task is None:
        raise UsageError(
            "the group level needs a task: add --group-task train, --group-task metrics or --group-task generate"
        )
    import torch

    torch.set_num_threads(config.nipype.omp_nthreads)  # PyTorch's threads in this process (training, generation)
    if task == "train":
        from .train import run_train

        return run_train(config)
    if task == "metrics":
        from .metrics import run_metrics

        return run_metrics(config)
    if task == "generate":
        from .generate import run_generate

        return run_generate(config)
    raise UsageError(f"--group-task {task!r} is unknown; use one of: {', '.join(TASKS)}")


__all__ = ["TASKS", "run_group"]
