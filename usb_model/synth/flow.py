"""Fluid-driven deformation of lesion shapes: a divergence-free velocity and upwind advection.

Why: UNA/USB make pseudo-lesions look less like noise blobs by transporting them along a
random incompressible flow, ``dP/dt = -V . grad P`` with ``V = curl(Psi)``. A curl has zero
divergence, so the flow shears and folds a shape without creating or destroying volume.

Upstream choices kept here: three Perlin potentials (seeded independently, unlike upstream,
which seeds all three alike), a magnitude multiplier of 500, time step 0.1, 1 to 10 steps,
first-order upwind differences. Two deliberate changes, both documented:
- each step is split into CFL-safe sub-steps (``sum_i |V_i| dt <= cfl`` voxels), because plain
  upwind steps of 0.1 blow up whenever the flow moves more than a voxel per step;
- the multiplier 500 is defined for a 160-voxel grid; velocities are rescaled so a flow moves
  a shape by the same fraction of the field of view on any grid (so a 48^3 test grid and the
  160^3 training grid see the same deformations, in millimetres).
The curl is computed from the potentials' exact derivatives (``PerlinField.sample``), so the
field is divergence-free up to floating point, and can be evaluated on any sub-box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from usb_model.synth.perlin import PerlinField

__all__ = ["VelocityField", "advect"]

REFERENCE_SIZE = 160.0


class VelocityField:
    """``V = scale * curl(Psi)`` from three independent Perlin potentials spanning a grid.

    ``grid_shape`` is the full grid (in voxels) the potentials span with ``res`` cells along
    every axis (isotropic cells of ``max(grid_shape) / res`` voxels); velocities are in voxels
    per unit time of that grid.
    """

    def __init__(
        self,
        grid_shape: Sequence[int],
        rng: np.random.Generator,
        res: int | Sequence[int] = (2, 5),
        magnitude: float = 500.0,
    ):
        size = float(max(grid_shape))
        if np.ndim(res) == 0:
            cells = [int(res)] * 3
        else:
            lo, hi = int(res[0]), int(res[1])
            cells = [int(rng.integers(lo, hi + 1)) for _ in range(3)]
        # One potential per component, each with its own gradients (drawn in turn from rng).
        self.potentials = [PerlinField.random((c, c, c), (size, size, size), rng) for c in cells]
        self.scale = float(magnitude) * (size / REFERENCE_SIZE) ** 2

    def sample(self, coords: Sequence[np.ndarray]) -> np.ndarray:
        """Velocity ``(3, n0, n1, n2)`` (float32, voxels / unit time) at the grid ``coords``."""
        p0, p1, p2 = self.potentials
        v0 = p2.sample(coords, 1) - p1.sample(coords, 2)
        v1 = p0.sample(coords, 2) - p2.sample(coords, 0)
        v2 = p1.sample(coords, 0) - p0.sample(coords, 1)
        v = np.stack([v0, v1, v2])
        v *= self.scale
        return v


def advect(
    p: np.ndarray,
    velocity: np.ndarray,
    steps: int,
    dt: float = 0.1,
    cfl: float = 0.9,
    spacing: float = 1.0,
) -> np.ndarray:
    """Transport ``p`` by ``dP/dt = -V . grad P`` for ``steps`` steps of ``dt`` (first-order upwind).

    ``velocity`` is ``(3, *p.shape)`` in voxels (of the grid ``velocity`` was sampled on)
    per unit time; ``spacing`` divides it when ``p`` lives on a grid ``spacing`` times coarser.
    Each step is split into sub-steps of at most ``cfl`` voxels of transport, which keeps the
    scheme monotone: ``p`` stays within its initial range. Edges are zero-flux.
    """
    p = np.array(p, dtype=np.float32, copy=True)
    v = np.asarray(velocity, dtype=np.float32) / float(spacing)
    total = float(steps) * float(dt)
    if total <= 0 or p.size == 0:
        return p
    speed = float(np.abs(v).sum(axis=0).max())
    n_sub = max(int(steps), int(np.ceil(total * speed / cfl)))
    h = np.float32(total / n_sub)
    # Pre-sliced upwind coefficients: V>0 takes the backward difference, V<0 the forward one.
    coeffs = []
    for axis in range(3):
        back = [slice(None)] * 3
        fwd = [slice(None)] * 3
        back[axis] = slice(1, None)
        fwd[axis] = slice(None, -1)
        vp = np.ascontiguousarray(np.maximum(v[axis], 0)[tuple(back)] * h)
        vm = np.ascontiguousarray(np.minimum(v[axis], 0)[tuple(fwd)] * h)
        coeffs.append((tuple(back), tuple(fwd), vp, vm))
    update = np.empty_like(p)
    for _ in range(n_sub):
        update.fill(0.0)
        for axis, (back, fwd, vp, vm) in enumerate(coeffs):
            diff = np.diff(p, axis=axis)  # diff[k] = p[k+1] - p[k]
            update[back] -= vp * diff
            update[fwd] -= vm * diff
        p += update
    return p
