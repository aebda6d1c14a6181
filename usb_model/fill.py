"""Classical lesion fills: what users would pick instead of USB, and where USB's healing starts.

Fills that the lesion-filling literature uses, on any grid, on plain arrays:

- ``wm_fill``: the white-matter mean plus noise of the white matter's spread inside the lesion,
  as FSL's ``lesion_filling`` does; right for white-matter lesions, wrong wherever the lesion
  covers grey matter or CSF;
- ``template_graft``: a (registered) template's intensities, mapped onto the scan's by a
  least-squares line fitted outside the lesion (virtual brain grafting with a template donor);
  anatomy-shaped, but the template's anatomy, not the participant's;
- ``local``: the tissue around the lesion interpolated into it (normalised convolution of the
  brain outside the lesion), the participant's own intensities and shading but no structure;
- ``lift``: the lesion's own voxels lifted to that interpolated tissue, their fine texture kept
  (``lift_fill``): for a lesion that only darkens the tissue it sits in, the subject's own
  tissue is still there, and any replacement can only lose it;
- ``hole_fill``: the smoothest continuation of the tissue at a small hole's edge (biharmonic
  inpainting), which ``auto`` gives the small dark lesions it fills from their surroundings.

USB's mask-aware healing encodes one of these fills instead of the raw lesion, so that the
denoiser refines a brain-like guess rather than a dark hole it would otherwise keep (see
``usb_model.tasks.USB.heal``).
"""

from __future__ import annotations

import numpy as np

FILLS = ("auto", "graft", "wm", "local", "lift", "none")

#: ``auto``: a lesion component whose rim is at least this share white matter is a white-matter
#: lesion (WMH, a lacune in the centrum semiovale) and gets the white-matter fill; any other
#: (cortical, deep grey, territorial) gets the template graft.
AUTO_WM_RIM = 0.5

#: White matter on a T1w brain without a tissue map: voxels at least this fraction of the brain's
#: 99th intensity percentile (white matter is the bright mode of a T1w brain; grey matter sits
#: near 0.6-0.75 of it, so the cut holds whatever share of the brain each tissue has).
WM_FRACTION = 0.85

#: A lesion component whose median is at least this fraction of the tissue interpolated around it
#: is subtle (a white-matter lesion that darkens T1w by a third or less; ``auto`` gives it the
#: white-matter mean, ``lift_fill`` lifts no further than it needs). Dark cores (lacunes,
#: infarcts: CSF-like, 0.1-0.5 of the tissue) stay below it.
SUBTLE_RATIO = 0.67

#: ``auto`` with the mask as given beside the grown one: a lesion whose given core is darker than
#: this fraction of its tissue (CSF-dark: a lacune, an infarct's cavity) has its fill chosen on
#: the given voxels, any other on the grown component. A growth around a lacune in grey matter
#: takes in that grey matter, and read on the grown core a 0.25 ml template lacune looked healthy
#: (0.97) and got the white-matter mean: the template's 2 mm-grid lacunes went from 10.8 to
#: 14.2 dB, nothing else moved by more than 0.05 (fill-candidates-givendark-*.json). Its rim,
#: too, is read as given: a 2 mm-grid infarct's grown mask reached the white matter and lost the
#: graft (Colin 27 through the participant level, 11.6 dB against 16.4; the infarct class in
#: fill-candidates-givendark-rim-*.json: Colin +0.5-0.7 dB, the template's exact and 2 mm-grid
#: masks -1.1 dB).
GIVEN_DARK_RATIO = 0.5

#: ``lesion_contrast`` reads a lesion's intensity on its core, this far (mm) inside the mask's edge.
CONTRAST_EDGE_MM = 1.0

#: ... as this percentile of the core's voxels (50: the median). The 25th was measured as a way to
#: keep a small, fragmented lacune dark under a too-large mask (``auto_given_dark_p25`` in
#: benchmarks/fill_candidates.py, fill-candidates-p25-*.json, 2026-12-06): the template's lacunes
#: +1.3 dB on average (+6.3 and +4.3 on one case's exact and too-large masks), Colin's subtle
#: lesions +0.3, but WMH -0.1 on average with Colin's short masks -0.8 and -2.9 (their cores then
#: read dark and got the local fill). Not adopted.
CONTRAST_PERCENTILE = 50

#: ``auto``: a dark lesion component (``lesion_contrast`` below ``SUBTLE_RATIO``) smaller than
#: this (ml) is a lacune-like hole and is filled from the tissue around it (``local``): on both
#: benchmark anatomies the local fill beat the white-matter fill and the graft on lacunes by
#: 5-7 dB, where a graft's few-mm misregistration and a global mean both miss a small hole.
#: Read on the core, a lacune's size still depends on its mask: a 1.8 ml lacune (the class
#: draws up to 1.5 ml, and its partial-volume rim adds to that) had a core of 0.76 ml with its
#: exact mask and 1.43 ml with a mask 1 mm too large, which then got the graft (Colin 27
#: through the participant level: 14.8 dB against 17.2). 2.5 ml sits above any lacune's core
#: however its mask was drawn (a 15 mm lacune is 1.8 ml) and far below the smallest infarct's.
#: Raised to 4 ml (2026-12-07): a 3.2 ml piece of an infarct, its core 1.9 ml with the exact mask
#: and 3.2 ml with a mask 1 mm too large, got the local fill with one and the graft with the
#: other (the template's anatomy through the participant level: 15.9 dB against 14.2; 15.1 with
#: 4 ml, the rest the too-large edge its local fill continues and the graft's registration,
#: healing-template-large1-g6.json); on the harness 4 ml gained Colin 27's exact infarct masks 1.4 dB and moved every other class and
#: mask by at most 0.1 dB but the template's 2 mm-grid subtle lesions (-0.3;
#: ``auto_given_dark_local4`` in fill-candidates-palegrey-*.json).
AUTO_LOCAL_ML = 4.0

#: ``auto``: a small lesion of subtle contrast whose rim is not white matter (``AUTO_WM_RIM``) and
#: whose surrounding tissue is below this fraction of the white-matter mean (grey matter) is
#: filled from that tissue (``local``), not with the white-matter mean. A lacune's piece in grey
#: matter, its mask 1 mm too large, read 0.84-0.88 of its tissue (0.57-0.64 with the exact mask)
#: and got the white-matter mean in grey matter: the template's anatomy through the participant
#: level lost 4.7 dB against the exact mask (16.8 against 21.5; 22.9 with this rule,
#: healing-template-large1-g6.json, 2026-12-07). Every
#: pale lesion off a white-matter rim filled locally (no tissue test) won 2-12 dB on the
#: template's lacunes, subtle lesions and exact WMH but lost Colin 27's subtle lesions 1-4 dB
#: and its degraded WMH masks 0.5-2 dB (fill-candidates-palegrey-*.json): there such lesions sit
#: in white matter that the rim test, read on a real head's contrast, calls grey. ``None``: off.
AUTO_GREY_TISSUE: float | None = 0.8
#: ... and only where the lesion's core this deep (mm) is darker than subtle: a mask 1 mm too large
#: puts tissue into the 1 mm core, not into the 2 mm one, and a subtle lesion is pale at any depth.
AUTO_GREY_DEEP_MM = 2.0

#: The fills ``auto_choice`` picks from, as the codes of its map (0: outside the mask).
AUTO_CODES = {"wm": 1, "local": 2, "graft": 3}

#: Gaussian width (mm) of the neighbourhood the local fill and the lift interpolate from; where
#: a lesion is wider than the kernel reaches, the width doubles until every voxel has support.
LOCAL_SIGMA_MM = 2.0

#: How ``auto`` fills the small dark lesions it fills from their surroundings (``AUTO_CODES``
#: ``local``): ``biharmonic`` (``hole_fill``: the smoothest continuation of the tissue at the
#: mask's edge, scikit-image's biharmonic inpainting) or ``gaussian`` (``local_tissue``: a
#: weighted mean of the tissue around it, what ``auto`` used until 2026-12-06). Measured on the
#: numpy harness with the app's growth (``auto_given_dark`` against ``auto_given_dark_gauss`` in
#: fill-candidates-biharmonic3-*.json, 2 cases per class and mask): lacunes +7.8 dB on average on
#: Colin 27 (none lower), +1.4 on the template's anatomy (its 2 mm-grid masks -1.7 and -0.6);
#: WMH +0.0 (Colin's largest loss -0.2); infarcts, whose small pieces get this fill, +0.2 on
#: Colin (-0.2 at worst), unchanged on the template.
AUTO_LOCAL_FILL = "biharmonic"

#: ``hole_fill``: a voxel of the one-voxel ring around a lesion is still lesion when it is this
#: fraction darker than the fill continued from beyond it, and a mask whose ring holds at least
#: ``RIM_DARK_SHARE`` such voxels stopped short of its lesion.
RIM_DARK = 0.1
RIM_DARK_SHARE = 0.1


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


def local_tissue(image, mask, *, brain=None, spacing=(1.0, 1.0, 1.0), sigma_mm: float = LOCAL_SIGMA_MM) -> np.ndarray:
    """The tissue around each lesion interpolated into it: a normalised convolution (Gaussian-
    weighted mean) of the brain's voxels outside the mask that look like the lesion's own
    surroundings (within 2.5 robust deviations of the median of a 2 mm shell around it), so that
    a white-matter lesion is filled from white matter and not from the grey matter and CSF that
    also lie near it. Where a lesion is wider than the kernel reaches, the kernel doubles until
    every voxel has support. Outside the mask: ``image`` itself."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    brain = brain_region(image) | mask if brain is None else (np.asarray(brain) > 0) | mask
    out = image.copy()
    outside = brain & ~mask
    if not mask.any() or not outside.any():
        return out
    spacing = np.asarray(spacing, dtype=np.float64)
    labels, n = ndimage.label(mask)
    # The shell is 2 mm, and at least the neighbouring voxels on a grid coarser than that.
    shell_mm = max(2.0, float(spacing.max()))
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        component = labels == index
        reach = np.ceil(shell_mm / spacing).astype(int) + 1
        box = tuple(slice(max(f.start - r, 0), min(f.stop + r, size)) for f, r, size in zip(found, reach, mask.shape))
        near = ndimage.distance_transform_edt(~component[box], sampling=spacing) <= shell_mm
        shell = image[box][near & outside[box]]
        if shell.size == 0:
            continue
        centre = float(np.median(shell))
        spread = max(2.5 * 1.4826 * float(np.median(np.abs(shell - centre))), 0.1 * abs(centre))
        support = (outside & (np.abs(image - centre) <= spread)).astype(np.float32)
        todo = component.copy()
        sigma = float(sigma_mm)
        while todo.any() and sigma <= 4 * max(mask.shape) * float(spacing.max()):
            r = np.ceil(3 * sigma / spacing).astype(int)
            sub = tuple(slice(max(f.start - k, 0), min(f.stop + k, size)) for f, k, size in zip(found, r, mask.shape))
            num = ndimage.gaussian_filter(image[sub] * support[sub], sigma / spacing, mode="constant")
            den = ndimage.gaussian_filter(support[sub], sigma / spacing, mode="constant")
            ok = todo[sub] & (den > 1e-3)
            region = out[sub]
            region[ok] = num[ok] / den[ok]
            todo[sub] &= ~ok
            sigma *= 2
    return out


def biharmonic(sub: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """``sub`` with its ``unknown`` voxels replaced by biharmonic inpainting (scikit-image), on
    the index grid; the scaling keeps the solver's [0, 1] assumption for any intensity range."""
    from skimage.restoration import inpaint_biharmonic

    sub = np.asarray(sub, dtype=np.float64)
    scale = float(np.abs(sub).max()) or 1.0
    return inpaint_biharmonic(sub / scale, unknown) * scale


def hole_fill(image, mask, *, brain=None, lesions=None) -> np.ndarray:
    """Each component of ``mask`` filled by biharmonic inpainting (``skimage.restoration.
    inpaint_biharmonic``): the smoothest surface that meets the tissue at its edge, slope
    included, where ``local_tissue``'s weighted mean flattens it. On the two lacunes of the
    participant-level healing runs, with the ring test below, it was 1.2-3.6 dB closer to the
    truth than that mean with every mask kind (exact, 1 mm short, 2 mm-grid, 1 mm too large;
    fill only, offline, on their native scans, 2026-12-06).

    A mask that stops short of its lesion leaves the lesion's dark rim at its edge, and a fill
    from the edge carries that rim inward (-2.6 and -4.2 dB against the mean on masks 1 mm
    short). So each component is first filled from one voxel further out, its ring included,
    and the ring compared with what that fill predicts for it: where at least
    ``RIM_DARK_SHARE`` of the ring is ``RIM_DARK`` darker than predicted, the ring is lesion and
    that wider fill is kept; otherwise the fill from the component's own edge. The index grid is
    taken as it is (biharmonic inpainting has no voxel size): on an anisotropic grid the
    continuation is smoother across the thick axis.

    ``lesions``: every lesion of the scan (``mask`` and those filled otherwise), never read as
    tissue: inside a component's box they are filled too and then dropped. Outside ``mask``:
    ``image`` itself."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    lesions = mask if lesions is None else (np.asarray(lesions) > 0) | mask
    brain = brain_region(image) | lesions if brain is None else (np.asarray(brain) > 0) | lesions
    out = image.copy()
    labels, _ = ndimage.label(mask)
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        # Biharmonic inpainting reads two voxels around what it fills, and the ring adds one.
        box = tuple(slice(max(f.start - 4, 0), min(f.stop + 4, size)) for f, size in zip(found, mask.shape))
        component = labels[box] == index
        others = lesions[box] & ~component
        ring = ndimage.binary_dilation(component) & brain[box] & ~lesions[box]
        sub = image[box].astype(np.float64)
        outside = ~brain[box]  # the background is not tissue: extrapolated, never read
        unknown = component | ring | others | outside
        if unknown.all():  # no tissue in reach: the weighted mean widens until it finds some
            out[box][component] = local_tissue(image, mask, brain=brain & ~lesions | mask)[box][component]
            continue
        filled = biharmonic(sub, unknown)
        if not ring.any() or np.mean(sub[ring] < (1 - RIM_DARK) * filled[ring]) < RIM_DARK_SHARE:
            unknown = component | others | outside
            filled = biharmonic(sub, unknown)
        out[box][component] = filled[component]
    return np.clip(out, 0.0, None)


def lift_fill(image, mask, *, brain=None, spacing=(1.0, 1.0, 1.0), tissue=None) -> np.ndarray:
    """The lesion's voxels scaled up to the tissue interpolated around it (``local_tissue``),
    each keeping its ratio to the lesion's own smooth intensity: the darkening goes, the
    subject's fine texture stays. Voxels already as bright as the tissue around them are kept.
    ``tissue``: ``local_tissue`` of the same image and mask, when the caller has it already."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    out = image.copy()
    if not mask.any():
        return out
    tissue = local_tissue(image, mask, brain=brain, spacing=spacing) if tissue is None else tissue
    # The lesion's own smooth intensity, over a quarter of the tissue's neighbourhood: wider keeps
    # more texture but lifts the healthy voxels at the edge of a too-large mask with their darker
    # neighbours (on tests/test_mask_growth.py's scene: error in that ring 0.035 at 1 mm, 0.013 at
    # 0.5 mm, against a noise of 0.02).
    sig = LOCAL_SIGMA_MM / 4 / np.asarray(spacing, dtype=np.float64)
    weight = mask.astype(np.float32)
    smooth = ndimage.gaussian_filter(image * weight, sig) / np.maximum(ndimage.gaussian_filter(weight, sig), 1e-6)
    gain = np.where(smooth > 1e-6, tissue / np.maximum(smooth, 1e-6), 1.0)
    gain = np.clip(
        gain, 1.0, 1.0 / (1.0 - 0.999 * (1 - SUBTLE_RATIO))
    )  # brighten only, and only as far as a subtle lesion needs
    out[mask] = image[mask] * gain[mask]
    return out


def lesion_core(component: np.ndarray, spacing=(1.0, 1.0, 1.0), edge_mm: float = CONTRAST_EDGE_MM) -> np.ndarray:
    """A lesion's voxels more than ``edge_mm`` inside its mask's edge (the whole mask when none
    is): where a generous or grown mask still holds the lesion and not the tissue around it."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(component, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    core = component & (depth > edge_mm)
    return core if core.any() else component


def lesion_contrast(image, mask, *, brain=None, spacing=(1.0, 1.0, 1.0), tissue=None) -> np.ndarray:
    """Per connected component of ``mask``: the median intensity of its core over the median of
    the tissue interpolated into it (1: invisible, 0: black). Returned as a map on the mask's voxels.

    The core leaves out the component's outer ``CONTRAST_EDGE_MM`` (the whole component when
    nothing is left): a mask drawn generously, or grown to the rim, takes in healthy tissue at its
    edge, and read over the whole mask a lacune 1 mm too large passed for a subtle lesion and lost
    5 dB to the wrong fill (benchmarks/fill_candidates.py, large1 and grid2 masks)."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    tissue = local_tissue(image, mask, brain=brain, spacing=spacing) if tissue is None else tissue
    labels, _ = ndimage.label(mask)
    out = np.zeros(mask.shape, np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[box] == index
        out[box][component] = core_contrast(image[box], tissue[box], component, spacing)
    return out


def core_contrast(image, tissue, component, spacing, edge_mm: float = CONTRAST_EDGE_MM) -> float:
    """``lesion_contrast`` of one component (arrays cut to its box), its core ``edge_mm`` deep."""
    core = lesion_core(component, spacing, edge_mm)
    ref = float(np.median(tissue[component]))
    return float(np.percentile(image[core], CONTRAST_PERCENTILE)) / ref if ref > 0 else 0.0


def prefill(
    image, mask, kind: str, *, template=None, spacing=(1.0, 1.0, 1.0), given=None, given_dark=None, brain=None
) -> np.ndarray:
    """``image`` with its lesion filled by ``kind`` (``auto``, ``graft``, ``wm`` or ``none``).

    ``given``: for ``auto``, the mask as the user gave it when ``mask`` is that mask grown
    (usb_model.mask_growth): each lesion's fill is chosen on what was given and applied to all
    that is healed (``auto_choice``).

    ``graft`` without a template falls back to ``wm``: a checkpoint without a template on its
    grid cannot graft. ``auto`` decides per connected component of the mask (``auto_choice``).
    ``spacing`` (mm) sizes the neighbourhood of ``local`` and ``lift`` and the components' volumes.

    ``brain``: the brain mask, where ``image`` is a head and not a skull-stripped brain (the
    participant level's native fill reads the file as given). Without it the brain is the
    non-zero voxels (``brain_region``): on a whole head that takes in the scalp, and the
    white-matter mean of Colin 27's head (``ch2.nii.gz``) was its fat (170, against 111 for the
    white matter of the same head stripped).
    """
    if kind not in FILLS:
        raise ValueError(f"unknown fill {kind!r}; choose one of {', '.join(FILLS)}")
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    if kind == "none":
        return image
    brain = None if brain is None else (np.asarray(brain) > 0) | mask
    if kind == "local":
        return local_tissue(image, mask, brain=brain, spacing=spacing)
    if kind == "lift":
        return lift_fill(image, mask, brain=brain, spacing=spacing)
    if kind == "auto":
        tissue = local_tissue(image, mask, brain=brain, spacing=spacing)  # read by the choice and the local fill
        choice = auto_choice(
            image, mask, spacing=spacing, tissue=tissue, given=given, given_dark=given_dark, brain=brain
        )
        # Every fill sees the scan as it is, every lesion excluded from its fit.
        out = wm_fill(image, mask, brain=brain, noise=False)
        if (choice == AUTO_CODES["local"]).any():
            local = choice == AUTO_CODES["local"]
            biharmonic = AUTO_LOCAL_FILL == "biharmonic"
            out[local] = (hole_fill(image, local, brain=brain, lesions=mask) if biharmonic else tissue)[local]
        graft = choice == AUTO_CODES["graft"]
        if graft.any() and template is not None:
            out[graft] = template_graft(image, mask, template, brain=brain)[graft]
        return out
    if kind == "graft" and template is not None:
        return template_graft(image, mask, template, brain=brain)
    return wm_fill(image, mask, brain=brain, noise=False)


def white_matter_lesions(image, mask, *, brain=None, wm=None) -> np.ndarray:
    """The components of ``mask`` whose one-voxel rim (inside the brain) is mostly white matter.
    ``wm``: ``white_matter(image, brain | mask, mask)``, when the caller has it already."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    brain = (brain_region(image) if brain is None else np.asarray(brain) > 0) | mask
    wm = white_matter(image, brain, mask) if wm is None else wm
    labels, _ = ndimage.label(mask)
    out = np.zeros_like(mask)
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        box = tuple(slice(max(f.start - 1, 0), min(f.stop + 1, n)) for f, n in zip(found, mask.shape))
        component = labels[box] == index
        rim = ndimage.binary_dilation(component) & ~mask[box] & brain[box]
        if rim.any() and wm[box][rim].mean() >= AUTO_WM_RIM:
            out[box] |= component
    return out


def auto_choice(
    image, mask, *, spacing=(1.0, 1.0, 1.0), tissue=None, given=None, given_dark: float | None = None, brain=None
) -> np.ndarray:
    """The fill ``prefill(kind="auto")`` gives each connected component of ``mask``, as a map of
    ``AUTO_CODES``, in this order (benchmarks/fill_candidates.py, both anatomies):

    1. dark (``lesion_contrast`` < ``SUBTLE_RATIO``) and under ``AUTO_LOCAL_ML`` (both read on
       the ``lesion_core``): ``local``, filled as ``AUTO_LOCAL_FILL`` says (``hole_fill``);
    2. a white-matter rim (``white_matter_lesions``) or a subtle contrast (>= ``SUBTLE_RATIO``):
       ``wm``, the white-matter mean. Subtle lesions and WMH were once lifted to the tissue
       around them (``lift``), keeping the subject's own texture: that won on the template's
       own anatomy but lost 4-6 dB to the white-matter mean on a real head (Colin 27), where
       the lesion's darkened texture is all that lift keeps;
    3. anything else (cortical, deep grey, territorial): ``graft``, where anatomy matters.

    ``tissue``: ``local_tissue`` of the same image and mask, when the caller has it already.

    ``given``: the mask as given, when ``mask`` is that mask grown. Contrast and size are then
    read on each component's given voxels (their core), and the fill chosen there covers the
    whole grown component. A growth takes in the lesion's partial-volume rim, which is brighter
    than the lesion: read over the grown mask, a lacune whose 2 mm-grid mask was grown from 1.9
    to 4.4 ml got a core of 2.6 ml at contrast 0.72 and the white-matter mean instead of its
    local fill (Colin 27 through the participant level: 11.0 dB against 17.1 with the exact
    mask). A component with no given voxel (never made by the growths, which only add to the
    mask) is read on itself.

    The app does not pass ``given`` (2026-12-05, ``benchmarks/fill_candidates.py --classes
    lacune,wmh,subtle --growths auto``, fill-candidates-given.json): it gained 5.0 and 4.0 dB
    on the template anatomy's lacunes with 2 mm-grid and too-large masks, nothing on Colin 27's
    lacunes, and lost 2.1 and 0.4 dB on Colin's WMH (2 mm-grid, short masks), whose dark cores
    then got the local fill across a mask grown to 2-3 times the lesion. On the real head it
    lost there.

    ``given_dark``: read on the given voxels only where they are CSF-dark (contrast below this),
    on the healed component otherwise: a lacune stays a lacune however far its mask grew, and a
    WMH is read as before. The app passes ``given`` with ``given_dark=GIVEN_DARK_RATIO`` since
    2026-12-06 (``auto_given_dark`` in benchmarks/fill_candidates.py: it won on the template's
    2 mm-grid lacunes and moved nothing else).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask) > 0
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    tissue = local_tissue(image, mask, brain=brain, spacing=spacing) if tissue is None else tissue
    given = mask if given is None else (np.asarray(given) > 0) & mask
    region = (brain_region(image) if brain is None else np.asarray(brain) > 0) | mask
    wm = white_matter(image, region, mask)  # read by the rim test and the grey-matter level
    in_wm = white_matter_lesions(image, mask, brain=brain, wm=wm)
    # Read on the given mask, a lesion's rim is the given mask's rim too: a 2 mm-grid infarct's
    # mask grown by 1 mm reached the white matter around it and lost its graft (Colin 27 through
    # the participant level: 11.6 dB against 16.4 for the graft).
    in_wm_given = white_matter_lesions(image, given, brain=brain) if given_dark is not None else in_wm
    voxel_ml = float(np.prod(spacing)) / 1000.0
    grey_level = None  # the tissue level below which a lesion's surroundings are grey matter
    if AUTO_GREY_TISSUE is not None:
        grey_level = AUTO_GREY_TISSUE * float(image[wm].mean()) if wm.any() else None
    labels, _ = ndimage.label(mask)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[box] == index
        read = component & given[box]
        read = read if read.any() else component
        ratio = core_contrast(image[box], tissue[box], read, spacing)
        rim_wm = in_wm[box][component].any()
        if given_dark is not None and ratio >= given_dark:  # not CSF-dark as given: read as healed
            read = component
            ratio = core_contrast(image[box], tissue[box], read, spacing)
        elif given_dark is not None:  # CSF-dark as given: its rim as given, too
            rim_wm = in_wm_given[box][read].any()
        # The size, like the contrast, from the core: a lacune's mask drawn 1 mm too large is
        # still a lacune (on Colin 27 such masks lost 3 dB to the white-matter fill otherwise).
        small = lesion_core(read, spacing).sum() * voxel_ml < AUTO_LOCAL_ML
        if ratio < SUBTLE_RATIO and small:
            code = AUTO_CODES["local"]
        elif (
            ratio >= SUBTLE_RATIO
            and small
            and not rim_wm
            and grey_level is not None
            and float(np.median(tissue[box][component])) < grey_level
            and core_contrast(image[box], tissue[box], read, spacing, AUTO_GREY_DEEP_MM) < SUBTLE_RATIO
        ):
            code = AUTO_CODES["local"]
        elif ratio >= SUBTLE_RATIO or rim_wm:
            code = AUTO_CODES["wm"]
        else:
            code = AUTO_CODES["graft"]
        out[box][component] = code
    return out
