"""Running a USB edit for the app: parameters in, an EditResult and the parameters used out."""

from __future__ import annotations

from typing import Any

import numpy as np

from usb_model.tasks import USB, EditResult

from .errors import DataError
from .model import ModelBundle

# CLI/sidecar names -> keyword arguments of USB.heal / USB.embed
EDIT_PARAMETERS = ("t_start", "stride", "alpha0", "k", "lcg_eta", "ddim_eta", "acg", "lcg")


def resolved_parameters(bundle: ModelBundle, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every sampling parameter with the value that will be used (explicit or the checkpoint's)."""
    s = bundle.config.sampling
    defaults = {
        "t_start": s.t_start_heal if task == "heal" else s.t_start_embed,
        "stride": s.edit_stride,
        "alpha0": s.alpha0,
        "k": s.k,
        "ddim_eta": s.ddim_eta,
        "acg": s.acg,
    }
    if task == "embed":
        defaults.update(lcg_eta=s.lcg_eta, lcg=s.lcg)
    unknown = set(params) - set(EDIT_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
    used = {**defaults, **{k: v for k, v in params.items() if v is not None and k in defaults}}
    return used


def run_edit(
    bundle: ModelBundle,
    task: str,
    image: np.ndarray,
    lesion: np.ndarray | None,
    params: dict[str, Any],
    *,
    seed: int,
    n_samples: int,
    device: str = "auto",
) -> tuple[EditResult, dict[str, Any]]:
    used = resolved_parameters(bundle, task, params)
    usb = USB(bundle.load_networks(), device=None if device == "auto" else device)
    spacing = bundle.config.grid.voxel_size
    if task == "heal":
        # No composite on the model grid: the composite happens on the native grid, where the
        # promise "unchanged outside the edit region" is about the user's own voxels.
        result = usb.heal(image, None, n_samples=n_samples, seed=seed, composite=False, spacing=spacing, **used)
    else:
        if lesion is None or not lesion.any():
            raise DataError("embedding needs a non-empty lesion mask on the model grid; the mask vanished after registration")
        result = usb.embed(image, lesion.astype(np.float32), n_samples=n_samples, seed=seed, composite=False, spacing=spacing, **used)
    return result, {**used, "seed": seed, "n_samples": n_samples, "task": task}
