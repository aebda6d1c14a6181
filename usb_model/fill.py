"""Classical lesion fills: what users would pick instead of USB, and where USB's healing starts.

Two fills that the lesion-filling literature uses, on any grid, on plain arrays:

- ``wm_fill``: the white-matter mean plus noise of the white matter's spread inside the lesion,
  as FSL's ``lesion_filling`` does; right for white-matter lesions, wrong wherever the lesion
  covers grey matter or CSF;
- ``template_graft``: a (registered) template's intensities, mapped onto the scan's by a
  least-squares line fitted outside the lesion (virtual brain grafting with a template donor);
  anatomy-shaped, but the template's anatomy, not the participant's.

USB's mask-aware healing encodes one of these fills instead of the raw lesion, so that the
denoiser refines a brain-like guess rather than a dark hole it would otherwise keep (see
``usb_model.tasks.USB.heal``).
"""

from __future__ import annotations

import numpy as np

FILLS = ("auto", "graft", "wm", "none")

#: ``auto``: a lesion component whose rim is at least this share white matter is a white-matter
#: lesion (WMH, a lacune in the centrum semiovale) and gets the white-matter fill; any other
#: (cortical, deep grey, territorial) gets the template graft.
AUTO_WM_RIM = 0.5

#: White matter on a T1w brain without a tissue map: voxels at least this fraction of the brain's
#: 99th intensity percentile (white matter is the bright mode of a T1w brain; grey matter sits
#: near 0.6-0.75 of it, so the cut holds whatever share of the brain each tissue has).
WM_FRACTION = 0.85


def brain_region(image: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped, normalised image: its non-zero voxels."""
    return np.asarray(image) > 1e-3


def white_matter(image: np.ndarray, brain: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """A white-matter estimate from intensity alone (T1w: the bright part of the brain)."""
    keep = brain if exclude is None else brain & ~exclude
    if not keep.any():
        return keep
    return keep & (image >= WM_FRACTION * np.percentile(image[keep], 99))


def wm_fill(
    image, mask, *, brain=None, wm=None, rng: np.random.Generator | None = None, noise: bool = True
) -> np.ndarray:
    """The lesion's voxels replaced by white-matter intensities (FSL ``lesion_filling`` style).

    ``wm`` is a white-matter mask (a tissue map > 0.5); without it, the bright part of the brain
    outside the lesion. ``noise`` adds Gaussian noise of the white matter's std, as FSL does;
    without it the fill is the white-matter mean (smoother, and better by distortion metrics).
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    brain = brain_region(image) if brain is None else np.asarray(brain) > 0
    wm = white_matter(image, brain, mask) if wm is None else (np.asarray(wm) > 0.5) & ~mask
    out = image.copy()
    if not mask.any() or not wm.any():
        return out
    values = image[wm]
    n = int(mask.sum())
    fill = np.full(n, values.mean(), dtype=np.float32)
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        fill = fill + rng.normal(0.0, values.std(), n).astype(np.float32)
    out[mask] = fill
    return np.clip(out, 0.0, None)


def intensity_line(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the least-squares line ``target ~ slope * source + intercept``."""
    region = np.asarray(region) > 0
    if region.sum() < 2 or np.ptp(source[region]) == 0:
        return 1.0, 0.0
    slope, intercept = np.polyfit(source[region].astype(np.float64), target[region].astype(np.float64), 1)
    return float(slope), float(intercept)


def template_graft(image, mask, template, *, brain=None) -> np.ndarray:
    """The lesion's voxels replaced by the template's, matched to the scan by a line fitted on
    the brain outside the lesion."""
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    template = np.asarray(template, dtype=np.float32)
    brain = brain_region(image) if brain is None else np.asarray(brain) > 0
    slope, intercept = intensity_line(template, image, brain & ~mask)
    out = image.copy()
    out[mask] = slope * template[mask] + intercept
    return np.clip(out, 0.0, None)


def prefill(image, mask, kind: str, *, template=None) -> np.ndarray:
    """``image`` with its lesion filled by ``kind`` (``auto``, ``graft``, ``wm`` or ``none``).

    ``graft`` without a template falls back to ``wm``: a checkpoint without a template on its
    grid cannot graft. ``auto`` decides per connected component of the mask
    (``white_matter_lesions``): the white-matter fill inside white matter, where the template's
    anatomy adds nothing but its own intensity, and the graft elsewhere, where anatomy matters.
    """
    if kind not in FILLS:
        raise ValueError(f"unknown fill {kind!r}; choose one of {', '.join(FILLS)}")
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    if kind == "none":
        return image
    if kind == "auto":
        in_wm = white_matter_lesions(image, mask)
        # Both fills see the scan as it is, every lesion excluded from their fits.
        out = wm_fill(image, mask, noise=False)
        rest = mask & ~in_wm
        if rest.any() and template is not None:
            out[rest] = template_graft(image, mask, template)[rest]
        return out
    if kind == "graft" and template is not None:
        return template_graft(image, mask, template)
    return wm_fill(image, mask, noise=False)


def white_matter_lesions(image, mask) -> np.ndarray:
    """The components of ``mask`` whose one-voxel rim (inside the brain) is mostly white matter."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    brain = brain_region(image) | mask
    wm = white_matter(image, brain, mask)
    labels, n = ndimage.label(mask)
    out = np.zeros_like(mask)
    for index in range(1, n + 1):
        component = labels == index
        rim = ndimage.binary_dilation(component) & ~mask & brain
        if rim.any() and wm[rim].mean() >= AUTO_WM_RIM:
            out |= component
    return out
