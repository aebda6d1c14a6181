"""Running a USB edit for the app: parameters in, an EditResult and the parameters used out."""

from __future__ import annotations

from typing import Any

import numpy as np

from usb_model.config import EditParameters
from usb_model.costs import CostLog
from usb_model.diffusion import stride_for_steps
from usb_model.tasks import USB, EditResult

from .errors import DataError
from .model import ModelBundle

# CLI/sidecar names -> keyword arguments of USB.heal / USB.embed
EDIT_PARAMETERS = EditParameters.names()


def resolved_parameters(bundle: ModelBundle, task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every sampling parameter with the value that will be used (explicit or the checkpoint's)."""
    s = bundle.config.sampling
    if task == "heal":
        # USB.heal resolves the mode-dependent defaults itself and reports them (EditResult.params).
        defaults = dict.fromkeys(p for p in EDIT_PARAMETERS if p not in ("lcg_eta", "lcg"))
    else:
        defaults = {
            "t_start": s.t_start_embed,
            "stride": s.edit_stride,
            "alpha0": s.alpha0,
            "k": s.k,
            "ddim_eta": s.ddim_eta,
            "acg": s.acg,
            "lcg_eta": s.lcg_eta,
            "lcg": s.lcg,
            "steps": None,
            "band_mm": tuple(s.band_mm),
        }
    unknown = set(params) - set(EDIT_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
    used = {**defaults, **{k: v for k, v in params.items() if v is not None and k in defaults}}
    return {k: v for k, v in used.items() if v is not None}


def generate_lesion(
    bundle: ModelBundle, image: np.ndarray, brain: np.ndarray | None, *, seed: int, device: str = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """``--lesion-from generate``: a lesion mask proposed by the model for this brain, on the model
    grid (``USB.generate_lesion``: paired sampling, the candidate whose generated brain is closest
    to this one, cut to the brain), and what was chosen, for the sidecars."""
    usb = USB(bundle.load_networks(), device=None if device == "auto" else device, template_t1w=bundle.template["t1w"])
    proposal = usb.generate_lesion(image, brain, seed=seed)
    mask = proposal.mask.cpu().numpy() > 0
    if not mask.any():
        raise DataError(
            "--lesion-from generate: the model proposed no lesion inside this brain; give a mask with --lesion-mask"
        )
    info = {k: v for k, v in proposal.info.items() if k != "candidates"}  # the sidecar keeps the choice
    return mask, info


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
    costs: CostLog | None = None,
    given: np.ndarray | None = None,
) -> tuple[EditResult, dict[str, Any]]:
    """``costs``, when given, records each stage's seconds and peak memory and the autoencoder's
    passes (usb_model.costs), the loading of the networks included. ``given``: heal's lesion mask
    as the user gave it, when ``lesion`` is that mask grown (``USB.heal``)."""
    used = resolved_parameters(bundle, task, params)
    steps = used.pop("steps", None)
    if steps:  # --steps N: the stride that walks from this image's t_start to 0 in about N steps
        s = bundle.config.sampling
        mode = used.get("mode", s.heal_mode)
        if mode == "auto":
            mode = "mask" if lesion is not None and lesion.any() else "detect"
        default_t = {"heal": s.t_start_heal if mode == "acg" else s.t_start_mask, "embed": s.t_start_embed}[task]
        used["stride"] = stride_for_steps(int(used.get("t_start", default_t)), int(steps))
    costs = costs if costs is not None else CostLog()
    with costs.stage("load"):
        usb = USB(
            bundle.load_networks(),
            device=None if device == "auto" else device,
            template_t1w=bundle.template["t1w"],
            costs=costs,
        )
    spacing = bundle.config.grid.voxel_size
    if task == "heal":
        # No composite on the model grid: the composite happens on the native grid, where the
        # promise "unchanged outside the edit region" is about the user's own voxels.
        known = lesion.astype(np.float32) if lesion is not None and lesion.any() else None
        result = usb.heal(
            image, known, n_samples=n_samples, seed=seed, composite=False, spacing=spacing, given=given, **used
        )
        return result, {**result.params, "task": task}
    else:
        band = tuple(float(v) for v in used.pop("band_mm"))  # the composite is on the native grid
        if lesion is None or not lesion.any():
            raise DataError(
                "embedding needs a non-empty lesion mask on the model grid; the mask vanished after registration"
            )
        result = usb.embed(
            image, lesion.astype(np.float32), n_samples=n_samples, seed=seed, composite=False, spacing=spacing, **used
        )
    return result, {**used, "band_mm": band, "seed": seed, "n_samples": n_samples, "task": task}
