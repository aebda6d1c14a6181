"""Random lesion shapes inside a brain: Perlin shapes or real priors, moved by a random flow.

Why: USB learns healing from healthy brains with pseudo-lesions drawn into them ("anomaly
randomization", UNA). The shapes must cover everything from white-matter-hyperintensity-like
spots to stroke-like territories, look organic rather than like noise blobs, and never leave
the brain. The recipe (upstream's, with the changes said below):

1. draw a target volume (mL) from a size distribution (``size``);
2. an initial shape P0: Perlin noise at a random coarse resolution, thresholded at a random
   percentile in [90, 99.6] inside a box around a random brain voxel (the box is sized so that
   the percentile leaves the drawn volume; a radial envelope keeps the shape away from the
   box's faces), or a real lesion mask the user provides, flipped, rotated, scaled and moved;
3. transport P0 by a random divergence-free flow (``flow.VelocityField``, ``flow.advect``);
   the flow is taken in the lesion's frame (its mean velocity over the shape removed): a
   uniform translation adds nothing to a randomly placed shape, and would need a large box;
4. zero outside the allowed region (the brain, or white matter for WMH-like lesions) and
   binarize at 0.2 x max, as upstream; that level is raised, never above 0.5 x max, when it
   would overshoot the drawn volume (first-order upwind transport smears edges, which
   inflates volumes at 0.2 x max by a third or more).

All work happens in a box around the lesion, on a working grid of at most ``max_work`` voxels
a side (large lesions are shaped and advected at a coarser step, then upsampled linearly and
binarized at full resolution), so a 160^3 lesion costs a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from usb_model.synth.flow import VelocityField, advect
from usb_model.synth.perlin import PerlinField

__all__ = ["SIZE_PRESETS_ML", "draw_volume_ml", "random_lesion", "lesion_volume_ml"]

#: Lesion volume ranges (mL) of the named size distributions, drawn log-uniformly.
SIZE_PRESETS_ML: dict[str, tuple[float, float]] = {
    "wmh": (0.05, 8.0),  # white-matter-hyperintensity-like: spots, up to a moderate load
    "small": (0.05, 3.0),
    "medium": (3.0, 30.0),
    "large": (30.0, 200.0),  # stroke-like territories
    "stroke": (1.0, 200.0),
    "any": (0.05, 200.0),
}

SizeSpec = str | float | Sequence[float] | Callable[[np.random.Generator], float]


def draw_volume_ml(size: SizeSpec, rng: np.random.Generator) -> float:
    """A lesion volume (mL) from ``size``: a preset name, a (lo, hi) range, a number or a callable.

    Names and ranges are log-uniform, so every order of magnitude gets the same share of
    lesions; a callable receives ``rng`` and returns millilitres (any distribution you like).
    """
    if callable(size):
        return float(size(rng))
    if isinstance(size, str):
        if size not in SIZE_PRESETS_ML:
            raise ValueError(f"unknown lesion size {size!r}; choose from {sorted(SIZE_PRESETS_ML)}")
        lo, hi = SIZE_PRESETS_ML[size]
    elif np.ndim(size) == 0:
        return float(size)
    else:
        lo, hi = (float(s) for s in size)
    if not 0 < lo <= hi:
        raise ValueError(f"lesion size range must satisfy 0 < lo <= hi, got {size!r}")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def lesion_volume_ml(mask: np.ndarray, voxel_size: Sequence[float]) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(voxel_size)) / 1000.0


@dataclass
class _Box:
    """An axis-aligned box [lo, hi) of the grid, worked on every ``factor`` voxels."""

    lo: np.ndarray
    hi: np.ndarray
    factor: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi))

    def coords(self) -> list[np.ndarray]:
        return [np.arange(a, b, self.factor, dtype=np.float64) for a, b in zip(self.lo, self.hi)]


def _make_box(centre_lo, centre_hi, margin, shape, max_work) -> _Box:
    """A box around [centre_lo, centre_hi) plus ``margin``, clipped to the grid.

    Its length is trimmed to ``(m - 1) * factor + 1`` so the working grid's first and last
    points are the box's first and last voxels (exact linear upsampling back to full size).
    """
    shape = np.asarray(shape)
    lo = np.clip(np.floor(centre_lo - margin).astype(int), 0, shape - 1)
    hi = np.clip(np.ceil(centre_hi + margin).astype(int), lo + 1, shape)
    length = hi - lo
    factor = max(1, int(math.ceil((length.max() - 1) / max(max_work - 1, 1))))
    m = (length - 1) // factor + 1
    hi = lo + (m - 1) * factor + 1
    return _Box(lo=lo, hi=hi, factor=factor)


def _working_view(array: np.ndarray, box: _Box) -> np.ndarray:
    step = box.factor
    return array[tuple(slice(int(a), int(b), step) for a, b in zip(box.lo, box.hi))]


def _perlin_core(allowed, allowed_idx, target, rng, voxel_size, percentile):
    """Centre, core box and percentile of a Perlin shape whose box holds ``target / q`` voxels."""
    shape = np.asarray(allowed.shape)
    zooms = np.asarray(voxel_size, dtype=float)
    centre = np.array(np.unravel_index(allowed_idx[rng.integers(len(allowed_idx))], allowed.shape), float)
    pct = float(rng.uniform(*percentile))
    needed = target / max(1.0 - pct / 100.0, 1e-4)
    side_mm = float(np.cbrt(needed * zooms.prod()))
    max_side = float((shape * zooms).max())
    for _ in range(4):
        half = np.maximum(side_mm / 2.0 / zooms, 0.5)
        lo = np.clip(np.round(centre - half).astype(int), 0, shape - 1)
        hi = np.clip(np.round(centre + half).astype(int) + 1, lo + 1, shape)
        count = int(np.count_nonzero(allowed[tuple(slice(a, b) for a, b in zip(lo, hi))]))
        if count == 0:
            break
        new_side = min(side_mm * (needed / count) ** (1.0 / 3.0), max_side)
        if abs(new_side - side_mm) < 0.5 * zooms.min():
            break
        side_mm = new_side
    half = np.maximum(side_mm / 2.0 / zooms, 0.5)
    return centre, centre - half, centre + half + 1, pct


def _perlin_field(box: _Box, centre, core_lo, core_hi, rng) -> np.ndarray:
    """Perlin noise over the core box minus a radial envelope, on the box's working grid."""
    extent = np.maximum(core_hi - core_lo, 1.0)
    cells = int(rng.integers(1, 5))
    noise = PerlinField.random((cells,) * 3, extent, rng)
    coords = [c - lo for c, lo in zip(box.coords(), core_lo)]
    field = noise.sample(coords)
    field /= max(float(field.std()), 1e-6)
    half = extent / 2.0
    r2 = 0.0
    for axis, c in enumerate(box.coords()):
        d = (c - centre[axis]) / half[axis]
        r2 = r2 + (d**2).reshape([-1 if a == axis else 1 for a in range(3)])
    steepness = float(rng.uniform(0.5, 3.0))
    return field - steepness * r2.astype(np.float32)


def _threshold_top(values: np.ndarray, k: int) -> float:
    """The k-th largest value (the level keeping about ``k`` voxels)."""
    k = int(min(max(k, 1), values.size))
    return float(np.partition(values, values.size - k)[values.size - k])


def _prior_shape(prior, allowed, rng, voxel_size, max_shift_mm, flip_axes):
    """A user lesion mask, randomly flipped, rotated, scaled and moved: (core lo, hi, P0 full)."""
    p = np.asarray(prior, dtype=np.float32)
    if p.shape != allowed.shape:
        raise ValueError(f"lesion prior shape {p.shape} differs from the brain mask {allowed.shape}")
    idx = np.argwhere(p > 0.5)
    if idx.size == 0:
        return None
    zooms = np.asarray(voxel_size, float)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    pad = np.ceil(0.3 * (hi - lo)).astype(int) + 2
    lo_p, hi_p = np.maximum(lo - pad, 0), np.minimum(hi + pad, p.shape)
    crop = p[tuple(slice(a, b) for a, b in zip(lo_p, hi_p))]
    for axis in flip_axes:
        if rng.random() < 0.5:
            crop = np.flip(crop, axis=axis)
    angles = np.deg2rad(rng.uniform(-15, 15, size=3))
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    rot = _rotation(angles)
    # Rotation and scale in mm about the crop centre, expressed in voxel indices.
    m_mm = rot * scale
    m_vox = np.diag(1 / zooms) @ m_mm @ np.diag(zooms)
    inv = np.linalg.inv(m_vox)
    c = (np.asarray(crop.shape) - 1) / 2.0
    crop = ndimage.affine_transform(np.ascontiguousarray(crop), inv, c - inv @ c, order=1, mode="constant")
    shift = np.round(rng.uniform(-max_shift_mm, max_shift_mm, size=3) / zooms).astype(int)
    new_lo = lo_p + shift
    full = np.zeros(allowed.shape, np.float32)
    dst_lo = np.clip(new_lo, 0, allowed.shape)
    dst_hi = np.clip(new_lo + crop.shape, 0, allowed.shape)
    if np.any(dst_hi <= dst_lo):
        return None
    src = tuple(slice(int(a - n), int(b - n)) for a, b, n in zip(dst_lo, dst_hi, new_lo))
    full[tuple(slice(int(a), int(b)) for a, b in zip(dst_lo, dst_hi))] = crop[src]
    return dst_lo.astype(float), dst_hi.astype(float), full


def _rotation(angles) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _deformation_margin(flow: VelocityField, core_lo, core_hi, shape, total_time) -> float:
    """Voxels the lesion-frame flow can move a shape in ``total_time`` (coarse estimate)."""
    coords = [np.linspace(max(a, 0), min(b, n) - 1, 6) for a, b, n in zip(core_lo, core_hi, shape)]
    v = flow.sample(coords).reshape(3, -1)
    v = v - v.mean(axis=1, keepdims=True)
    return 1.25 * total_time * float(np.linalg.norm(v, axis=0).max()) + 2.0


def _advect_and_binarize(p0, box, flow, allowed, target, n_steps, dt):
    """Transport P0 on the working grid, upsample, restrict, binarize: a bool box array."""
    v = flow.sample(box.coords())
    weight = float(p0.sum())
    if weight > 0:
        v -= (v.reshape(3, -1) @ p0.reshape(-1) / weight).astype(np.float32)[:, None, None, None]
    p = advect(p0, v, n_steps, dt=dt, spacing=box.factor)
    if box.factor > 1:
        size = tuple(int(b - a) for a, b in zip(box.lo, box.hi))
        t = torch.from_numpy(p)[None, None]
        p = F.interpolate(t, size=size, mode="trilinear", align_corners=True)[0, 0].numpy()
    p = p * allowed[box.slices]
    pmax = float(p.max())
    if pmax <= 0:
        return np.zeros(p.shape, bool)
    level = 0.2 * pmax
    if np.count_nonzero(p > level) > target:
        level = min(max(level, _threshold_top(p[p > level], int(round(target)))), 0.5 * pmax)
        return p >= level if level > 0.2 * pmax else p > level
    return p > level


def random_lesion(
    brain_mask: np.ndarray,
    rng: np.random.Generator,
    size: SizeSpec = "any",
    wm: np.ndarray | None = None,
    *,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    prior: np.ndarray | None = None,
    wm_threshold: float = 0.5,
    percentile: tuple[float, float] = (90.0, 99.6),
    steps: tuple[int, int] = (1, 10),
    dt: float = 0.1,
    magnitude: float = 500.0,
    flow_res: tuple[int, int] = (2, 5),
    max_shift_mm: float = 20.0,
    flip_axes: Sequence[int] = (0,),
    max_work: int = 56,
    attempts: int = 3,
) -> np.ndarray:
    """A random binary lesion (bool array, same grid) lying inside ``brain_mask``.

    ``size`` is the volume distribution (see ``draw_volume_ml``; ignored with a ``prior``);
    ``wm`` (a white-matter probability map) restricts the lesion to white matter, for
    WMH-like lesions; ``prior`` is a real lesion mask (same grid) to randomize instead of a
    Perlin shape, flipped along ``flip_axes`` (left-right on a RAS grid), rotated, scaled and
    shifted by up to ``max_shift_mm``. The other parameters are upstream's recipe (see the
    module docstring). A draw whose lesion ends up far smaller than asked (pushed out of the
    brain) is redrawn up to ``attempts`` times; the closest is returned. The result can be
    empty only when no allowed voxel exists.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    allowed = brain if wm is None else brain & (np.asarray(wm) >= wm_threshold)
    out = np.zeros(brain.shape, dtype=bool)
    if not allowed.any():
        return out
    zooms = np.asarray(voxel_size, dtype=float)
    target = max(1.0, draw_volume_ml(size, rng) * 1000.0 / float(zooms.prod()))
    flow = VelocityField(brain.shape, rng, res=flow_res, magnitude=magnitude)
    allowed_idx = np.flatnonzero(allowed)
    best, best_score = None, -np.inf
    for _ in range(max(1, attempts)):
        n_steps = int(rng.integers(steps[0], steps[1] + 1))
        if prior is not None:
            shaped = _prior_shape(prior, allowed, rng, zooms, max_shift_mm, flip_axes)
            if shaped is None:
                continue
            core_lo, core_hi, full = shaped
            full *= allowed
            target = max(1.0, float(np.count_nonzero(full > 0.5)))
            margin = _deformation_margin(flow, core_lo, core_hi, brain.shape, n_steps * dt)
            box = _make_box(core_lo, core_hi, margin, brain.shape, max_work)
            if box.factor > 1:
                full = ndimage.uniform_filter(full, size=box.factor, mode="constant")
            p0 = np.ascontiguousarray(_working_view(full, box))
        else:
            centre, core_lo, core_hi, _percentile = _perlin_core(allowed, allowed_idx, target, rng, zooms, percentile)
            margin = _deformation_margin(flow, core_lo, core_hi, brain.shape, n_steps * dt)
            box = _make_box(core_lo, core_hi, margin, brain.shape, max_work)
            field = _perlin_field(box, centre, core_lo, core_hi, rng)
            allowed_w = _working_view(allowed, box)
            if not allowed_w.any():
                continue
            k = int(round(target / box.factor**3))
            level = _threshold_top(field[allowed_w], k)
            p0 = ((field >= level) & allowed_w).astype(np.float32)
        lesion = _advect_and_binarize(p0, box, flow, allowed, target, n_steps, dt)
        volume = int(np.count_nonzero(lesion))
        score = -abs(np.log(max(volume, 0.5) / target))
        if score > best_score:
            best, best_score = (box, lesion), score
        if volume >= 0.5 * target:
            break
    if best is not None:
        box, lesion = best
        out[box.slices] = lesion
    return out
