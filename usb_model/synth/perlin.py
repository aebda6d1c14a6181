"""Perlin gradient noise on regular grids, as separable tensor contractions.

Why this formulation: Perlin noise interpolates random unit gradients g_L, living on a coarse
lattice, with the quintic fade. Written as a sum over lattice points,

    n(t) = sum_L  g_L . (t - L)  h(t0 - L0) h(t1 - L1) h(t2 - L2),   h(d) = 1 - fade(|d|),

each gradient component contributes a product of three one-axis weight matrices, so a whole
grid (or any sub-box of it) is a couple of small matrix products: a 160^3 field costs tens of
milliseconds on one core, and exact spatial derivatives come from the same code by swapping
one axis' weights for their derivative (the divergence-free velocity field needs them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PerlinField", "perlin_noise"]


def _fade(s: np.ndarray) -> np.ndarray:
    return s * s * s * (s * (s * 6.0 - 15.0) + 10.0)


def _dfade(s: np.ndarray) -> np.ndarray:
    return 30.0 * s * s * (s - 1.0) ** 2


def _axis_weights(t: np.ndarray, n_cells: int, derivative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights of lattice points 0..n_cells for coordinates ``t`` (lattice units).

    Returns ``(B, A)`` with ``B = h(t - L)`` and ``A = (t - L) h(t - L)`` (or their derivatives
    with respect to ``t`` when ``derivative``), each of shape ``(len(t), n_cells + 1)``.
    """
    d = t[:, None] - np.arange(n_cells + 1, dtype=np.float64)[None, :]
    a = np.abs(d)
    inside = a < 1.0
    a = np.minimum(a, 1.0)
    h = np.where(inside, 1.0 - _fade(a), 0.0)
    if not derivative:
        return h, d * h
    dh = np.where(inside, -_dfade(a) * np.sign(d), 0.0)
    return dh, h + d * dh


@dataclass(frozen=True)
class PerlinField:
    """A 3D Perlin field: random unit gradients on a lattice spanning a grid of ``extent`` voxels.

    ``res`` is the number of lattice cells along each axis (the "coarse resolution"); the
    field can be sampled on any axis-aligned set of voxel coordinates, inside or outside the
    extent (it falls to zero one cell beyond the lattice).
    """

    gradients: np.ndarray  # (3, res0 + 1, res1 + 1, res2 + 1), unit vectors along axis 0
    res: tuple[int, int, int]
    extent: tuple[float, float, float]

    @classmethod
    def random(cls, res: Sequence[int], extent: Sequence[float], rng: np.random.Generator) -> PerlinField:
        res = tuple(max(1, int(r)) for r in res)
        g = rng.standard_normal((3, *(r + 1 for r in res)))
        g /= np.maximum(np.linalg.norm(g, axis=0, keepdims=True), 1e-12)
        return cls(gradients=g, res=res, extent=tuple(float(e) for e in extent))

    def sample(self, coords: Sequence[np.ndarray], derivative: int | None = None) -> np.ndarray:
        """The field (or its derivative along axis ``derivative``, per voxel) on a grid.

        ``coords`` are three 1-D arrays of voxel coordinates, one per axis; the result has
        shape ``(len(coords[0]), len(coords[1]), len(coords[2]))``, float32.
        """
        scale = [r / e for r, e in zip(self.res, self.extent)]
        weights = []
        for axis in range(3):
            t = np.asarray(coords[axis], dtype=np.float64) * scale[axis]
            b, a = _axis_weights(t, self.res[axis], derivative == axis)
            if derivative == axis:
                b, a = b * scale[axis], a * scale[axis]
            weights.append((b, a))
        n0, n1, n2 = (len(c) for c in coords)
        inner = {}
        for comp in range(3):
            m1 = weights[1][1 if comp == 1 else 0]
            m2 = weights[2][1 if comp == 2 else 0]
            t = self.gradients[comp] @ m2.T  # (r0+1, r1+1, n2)
            t = np.matmul(m1[None], t)  # (r0+1, n1, n2)
            key = 1 if comp == 0 else 0  # which axis-0 weights (A for component 0, else B)
            inner[key] = inner.get(key, 0.0) + t
        out = np.zeros((n0, n1 * n2), dtype=np.float32)
        for key, t in inner.items():
            m0 = weights[0][key].astype(np.float32)
            out += m0 @ t.reshape(t.shape[0], n1 * n2).astype(np.float32)
        return out.reshape(n0, n1, n2)


def perlin_noise(shape: Sequence[int], res: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Perlin noise filling a grid of ``shape`` with ``res`` lattice cells per axis (float32)."""
    field = PerlinField.random(res, shape, rng)
    return field.sample([np.arange(n, dtype=np.float64) for n in shape])
