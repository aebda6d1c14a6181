"""A torch Dataset of (healthy, lesioned, mask) training triplets, synthesized on the fly.

Why: USB trains on pairs that do not exist in the wild, so they are made per sample: a
random healthy brain (template or user scans), a random lesion inside it, the lesion drawn
in. A share of samples is healthy (empty mask, lesioned == healthy), which teaches the brain
denoiser the empty-lesion condition that healing uses.

Reproducibility: item ``i`` is a pure function of ``(seed, i)`` (its generator is
``numpy.random.default_rng([seed, i])``), so it is identical in any DataLoader worker, any DDP
rank and any process; there is no per-worker state to seed. The template is loaded lazily
(and cached) in each process, so the Dataset pickles small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from usb_model.config import GridConfig
from usb_model.synth.encode import encode_lesion
from usb_model.synth.healthy import synth_healthy
from usb_model.synth.lesions import SizeSpec, random_lesion
from usb_model.template import load_template

__all__ = ["TripletDataset", "synth_triplet"]

#: Darkening of WMH-like lesions on T1w: they are mildly hypointense, not CSF-dark.
WMH_T1W_STRENGTH = (0.2, 0.5)


def synth_triplet(
    source,
    rng: np.random.Generator,
    *,
    contrast: str = "T1w",
    healthy: bool = False,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    size: SizeSpec = "any",
    wmh_fraction: float = 0.25,
    lesion_masks: Sequence[np.ndarray] | None = None,
    prior_fraction: float = 0.5,
) -> dict[str, np.ndarray]:
    """One triplet as numpy arrays: ``healthy``, ``lesioned`` (float32 in [0, 1]), ``mask`` (bool).

    ``source`` is a ``Template`` or a scan array on the grid. Lesions are WMH-like (white
    matter only, ``size="wmh"``) with probability ``wmh_fraction`` when white matter is
    known, else shaped from a user prior (``lesion_masks``) with probability
    ``prior_fraction``, else Perlin shapes with volumes drawn from ``size``.
    """
    brain = synth_healthy(source, rng, contrast, voxel_size=voxel_size)
    image = brain.image
    mask = np.zeros(image.shape, dtype=bool)
    if healthy:
        return {"healthy": image, "lesioned": image.copy(), "mask": mask}
    kind = rng.random()
    strength = None
    if brain.wm is not None and kind < wmh_fraction:
        mask = random_lesion(brain.brain_mask, rng, size="wmh", wm=brain.wm, voxel_size=voxel_size)
        if contrast == "T1w":
            strength = WMH_T1W_STRENGTH
    elif lesion_masks and rng.random() < prior_fraction:
        prior = lesion_masks[int(rng.integers(len(lesion_masks)))]
        mask = random_lesion(brain.parenchyma, rng, voxel_size=voxel_size, prior=prior)
    else:
        mask = random_lesion(brain.parenchyma, rng, size=size, voxel_size=voxel_size)
    lesioned = encode_lesion(image, mask, rng, contrast, strength=strength)
    return {"healthy": image, "lesioned": lesioned, "mask": mask}


class TripletDataset(Dataset):
    """``length`` synthetic triplets on ``grid``; item ``i`` depends only on ``(seed, i)``.

    ``__getitem__`` returns float32 tensors ``{"healthy", "lesioned", "mask"}`` of shape
    ``(1, *grid.shape)`` with values in [0, 1]; healthy items have an all-zero mask and
    ``lesioned == healthy``. ``images``: optional user scans (skull-stripped, already on the
    grid) used instead of the template; ``lesion_masks``: optional real lesion masks on the
    grid, used as shape priors. ``size``, ``wmh_fraction`` and ``prior_fraction`` are
    passed to ``synth_triplet``.
    """

    def __init__(
        self,
        grid: GridConfig,
        length: int,
        seed: int = 0,
        healthy_fraction: float = 0.2,
        images: Sequence[np.ndarray] | None = None,
        contrast: str = "T1w",
        lesion_masks: Sequence[np.ndarray] | None = None,
        *,
        size: SizeSpec = "any",
        wmh_fraction: float = 0.25,
        prior_fraction: float = 0.5,
    ):
        if contrast not in ("T1w", "FLAIR"):
            raise ValueError(f"contrast must be 'T1w' or 'FLAIR', got {contrast!r}")
        if not 0.0 <= healthy_fraction <= 1.0:
            raise ValueError(f"healthy_fraction must lie in [0, 1], got {healthy_fraction}")
        if seed < 0:
            raise ValueError("seed must be non-negative")
        self.shape = tuple(int(s) for s in grid.shape)
        self.voxel_size = tuple(float(v) for v in grid.voxel_size)
        self.template_source = getattr(grid, "template_source", "nilearn")  # which copy synthesis deforms
        self.length = int(length)
        self.seed = int(seed)
        self.healthy_fraction = float(healthy_fraction)
        self.contrast = contrast
        self.size = size
        self.wmh_fraction = float(wmh_fraction)
        self.prior_fraction = float(prior_fraction)
        self.images = [self._check(a, "image") for a in images] if images else None
        self.lesion_masks = [self._check(a, "lesion mask") for a in lesion_masks] if lesion_masks else None

    def _check(self, array, what: str) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if array.shape != self.shape:
            raise ValueError(f"{what} of shape {array.shape} is not on the grid {self.shape}")
        return array

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index``: a function of ``(seed, index)`` only."""
        return np.random.default_rng([self.seed, int(index)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index = index % self.length
        rng = self.rng(index)
        healthy = bool(rng.random() < self.healthy_fraction)
        if self.images:
            source = self.images[int(rng.integers(len(self.images)))]
        else:
            source = load_template(
                GridConfig(shape=self.shape, voxel_size=self.voxel_size, template_source=self.template_source)
            )
        sample = synth_triplet(
            source,
            rng,
            contrast=self.contrast,
            healthy=healthy,
            voxel_size=self.voxel_size,
            size=self.size,
            wmh_fraction=self.wmh_fraction,
            lesion_masks=self.lesion_masks,
            prior_fraction=self.prior_fraction,
        )
        return {
            key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))[None] for key, value in sample.items()
        }
