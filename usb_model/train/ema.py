"""The exponential moving average of a denoiser's weights: what gets saved for inference."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_weights


class EMA:
    """An exponential moving average of a module's weights: what inference uses.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so a short run's
    average is not mostly the random initialisation.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, param in zip(self.module.parameters(), module.parameters()):
            shadow.lerp_(param.detach(), 1 - decay)
        for shadow, buf in zip(self.module.buffers(), module.buffers()):
            shadow.copy_(buf)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        load_weights(self.module, state["weights"], source="EMA state")
