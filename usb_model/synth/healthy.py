"""Varied healthy brains from a template (or from a user's own skull-stripped scan).

Why: USB's training pairs need many healthy brains, and on these machines the only real brain
is the MNI template. A template becomes many brains by a random affine and a smooth elastic
deformation (``spatial``) and a random re-synthesis of its contrast from its tissue maps
(``intensity``). A real scan already carries real anatomy and contrast, so it only gets the
light versions of both. The tissue maps travel with the image so lesions can be placed in
parenchyma or white matter of the *deformed* brain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from usb_model.intensity import TOP
from usb_model.synth.intensity import ContrastParams, augment_contrast, tissue_image
from usb_model.synth.spatial import SpatialParams, random_grid, warp
from usb_model.template import Template

__all__ = ["SynthBrain", "synth_healthy", "FLAIR_TOP"]

#: FLAIR brains are scaled to this 99.5th percentile, leaving headroom for bright lesions.
FLAIR_TOP = TOP["FLAIR"]


@dataclass
class SynthBrain:
    """A synthetic healthy brain on a grid: image in [0, 1] and where lesions may go."""

    image: np.ndarray  # float32 in [0, 1], zero outside the brain
    brain_mask: np.ndarray  # bool
    gm: np.ndarray | None = None  # probabilities, when the source had tissue maps
    wm: np.ndarray | None = None
    csf: np.ndarray | None = None

    @property
    def parenchyma(self) -> np.ndarray:
        """Where a lesion is plausible: GM or WM (the whole brain when maps are unknown)."""
        if self.gm is None or self.wm is None:
            return self.brain_mask
        return self.brain_mask & ((self.gm + self.wm) >= 0.5)


def _image_brain_mask(image: np.ndarray) -> np.ndarray:
    """Brain of a skull-stripped scan: voxels above 1% of its robust maximum."""
    values = image[image > 0]
    if values.size == 0:
        return np.zeros(image.shape, bool)
    return image > 0.01 * float(np.percentile(values, 99.5))


def synth_healthy(
    template_or_image: Template | np.ndarray,
    rng: np.random.Generator,
    contrast: str = "T1w",
    *,
    voxel_size: Sequence[float] | None = None,
    brain_mask: np.ndarray | None = None,
    spatial: SpatialParams | None = None,
    intensity: ContrastParams | None = None,
) -> SynthBrain:
    """A random healthy brain on the grid of ``template_or_image``.

    - ``Template``: full augmentation (affine, elastic, tissue re-synthesis in ``contrast``,
      gamma, bias, blur, noise); tissue maps are returned, deformed alike.
    - ``ndarray``: a skull-stripped scan already on the grid (``voxel_size`` in mm, default
      1 mm; ``brain_mask`` default: voxels above 1% of its robust maximum); light
      augmentation only, and ``contrast`` only sets the intensity headroom (the scan keeps
      its own contrast).
    Deterministic for the state of ``rng``.
    """
    if contrast not in ("T1w", "FLAIR"):
        raise ValueError(f"contrast must be 'T1w' or 'FLAIR', got {contrast!r}")
    top = FLAIR_TOP if contrast == "FLAIR" else 1.0
    if isinstance(template_or_image, Template):
        tpl = template_or_image
        spatial = spatial or SpatialParams()
        intensity = intensity or ContrastParams()
        grid = random_grid(tpl.shape, tpl.voxel_size, rng, spatial)
        t1w, gm, wm, csf, mask = warp([tpl.t1w, tpl.gm, tpl.wm, tpl.csf, tpl.brain_mask.astype(np.float32)], grid)
        brain = mask >= 0.5
        image = tissue_image(t1w, csf, gm, wm, contrast, rng, intensity)
        image = augment_contrast(image, brain, rng, intensity, top=top)
        return SynthBrain(image=image, brain_mask=brain, gm=gm * brain, wm=wm * brain, csf=csf * brain)

    scan = np.asarray(template_or_image, dtype=np.float32)
    if scan.ndim != 3:
        raise ValueError(f"expected a 3D scan, got shape {scan.shape}")
    zooms = (1.0, 1.0, 1.0) if voxel_size is None else tuple(voxel_size)
    mask = _image_brain_mask(scan) if brain_mask is None else np.asarray(brain_mask, bool)
    spatial = spatial or SpatialParams.light()
    intensity = intensity or ContrastParams.light()
    grid = random_grid(scan.shape, zooms, rng, spatial)
    warped, warped_mask = warp([scan * mask, mask.astype(np.float32)], grid)
    brain = warped_mask >= 0.5
    image = augment_contrast(warped, brain, rng, intensity, top=top)
    return SynthBrain(image=image, brain_mask=brain)
