"""The learning rate along a training stage, as a pure function of the stage's step.

No scheduler object carries state between steps, so a run resumed from any save, or asked for
more steps than first planned, follows exactly the curve it was on.
"""

from __future__ import annotations

import math

from ..config import TrainingConfig

SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, training: TrainingConfig) -> float:
    """Multiplier of the stage's base learning rate at 0-based ``step``.

    ``cosine`` falls from 1 to ``lr_min_ratio`` over ``lr_decay_steps`` steps and then holds;
    a constant rate makes the weights of a fixed-budget run depend on where the last step
    happened to land (the f2c4 autoencoder's held-out PSNR moved 3 dB between saves).
    """
    if training.lr_schedule not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {training.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if training.lr_schedule == "constant" or training.lr_decay_steps <= 0:
        return 1.0
    progress = min(step / training.lr_decay_steps, 1.0)
    floor = training.lr_min_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
