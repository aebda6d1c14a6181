"""Perlin noise and the divergence-free flow that deforms lesion shapes."""

import numpy as np
import pytest

from usb_model.synth.flow import VelocityField, advect
from usb_model.synth.perlin import PerlinField, _fade, perlin_noise


def _brute_perlin(field: PerlinField, point) -> float:
    """Textbook Perlin noise at one point: 8 corners, quintic fade, gradient dot offset."""
    t = np.asarray(point, float) * np.asarray(field.res) / np.asarray(field.extent)
    base = np.minimum(np.floor(t).astype(int), np.asarray(field.res) - 1)
    total = 0.0
    for corner in np.ndindex(2, 2, 2):
        lattice = base + corner
        d = t - lattice
        weight = np.prod([1.0 - _fade(abs(x)) for x in d])
        total += weight * float(np.dot(field.gradients[(slice(None), *lattice)], d))
    return total


def test_perlin_matches_textbook_definition():
    rng = np.random.default_rng(0)
    field = PerlinField.random((3, 2, 4), (30, 20, 40), rng)
    grid = field.sample([np.arange(30.0), np.arange(20.0), np.arange(40.0)])
    for point in [(3, 5, 7), (29, 19, 39), (11, 13, 2), (0, 0, 0)]:
        assert grid[point] == pytest.approx(_brute_perlin(field, point), abs=1e-5)


def test_perlin_sub_box_and_determinism():
    noise = perlin_noise((24, 20, 16), (3, 3, 2), np.random.default_rng(5))
    again = perlin_noise((24, 20, 16), (3, 3, 2), np.random.default_rng(5))
    np.testing.assert_array_equal(noise, again)
    field = PerlinField.random((3, 3, 2), (24, 20, 16), np.random.default_rng(5))
    box = field.sample([np.arange(4.0, 10.0), np.arange(2.0, 19.0), np.arange(0.0, 5.0)])
    np.testing.assert_allclose(box, noise[4:10, 2:19, 0:5], atol=1e-6)
    assert noise.std() > 0.05


def test_perlin_derivatives_match_finite_differences():
    field = PerlinField.random((2, 3, 2), (16, 16, 16), np.random.default_rng(1))
    x = np.array([3.3, 7.9, 12.2])
    h = 1e-3
    for axis in range(3):
        coords = [x, x, x]
        plus = [c + (h if a == axis else 0.0) for a, c in enumerate(coords)]
        minus = [c - (h if a == axis else 0.0) for a, c in enumerate(coords)]
        numeric = (field.sample(plus).astype(np.float64) - field.sample(minus)) / (2 * h)
        analytic = field.sample(coords, derivative=axis)
        np.testing.assert_allclose(analytic, numeric, atol=2e-3)


def test_velocity_is_divergence_free():
    shape = (48, 48, 48)
    flow = VelocityField(shape, np.random.default_rng(3))
    # Continuous divergence at many points, by central differences at a tiny spacing.
    rng = np.random.default_rng(4)
    h = 0.01
    for _ in range(3):
        base = rng.uniform(5, 40, size=3)
        div = 0.0
        scale = 0.0
        for axis in range(3):
            coords_p = [np.array([base[a] + (h if a == axis else 0.0)]) for a in range(3)]
            coords_m = [np.array([base[a] - (h if a == axis else 0.0)]) for a in range(3)]
            d = (flow.sample(coords_p)[axis].astype(np.float64) - flow.sample(coords_m)[axis]) / (2 * h)
            div += float(d.squeeze())
            scale += abs(float(d.squeeze()))
        assert abs(div) <= 1e-2 * max(scale, 1e-3)
    # On the voxel grid, the discrete divergence is small next to the velocity gradients.
    v = flow.sample([np.arange(n, dtype=float) for n in shape]).astype(np.float64)
    div = sum(np.gradient(v[a], axis=a) for a in range(3))
    grads = sum(np.abs(np.gradient(v[a], axis=a)) for a in range(3))
    assert np.abs(div).mean() < 0.05 * grads.mean()
    assert np.linalg.norm(v, axis=0).mean() > 0.5  # and it does move things


def test_three_potentials_are_independent():
    flow = VelocityField((32, 32, 32), np.random.default_rng(0), res=3)
    g = [p.gradients for p in flow.potentials]
    assert not np.allclose(g[0], g[1]) and not np.allclose(g[1], g[2])


def test_velocity_scale_is_grid_independent():
    """The same flow moves shapes by the same fraction of the field of view on any grid."""
    speeds = []
    for n in (40, 80):
        flow = VelocityField((n, n, n), np.random.default_rng(9), res=3)
        v = flow.sample([np.linspace(0, n - 1, 20)] * 3)
        speeds.append(np.linalg.norm(v, axis=0).mean() / n)
    assert speeds[0] == pytest.approx(speeds[1], rel=0.05)


def _ball(n, radius):
    x = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    return (np.sqrt((x**2).sum(axis=0)) < radius).astype(np.float32)


def test_advection_preserves_volume_and_range():
    n = 40
    ball = _ball(n, 8)
    flow = VelocityField((n, n, n), np.random.default_rng(2))
    v = flow.sample([np.arange(n, dtype=float)] * 3)
    moved = advect(ball, v, steps=10, dt=0.1)
    assert not np.allclose(moved, ball)  # it moved
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6  # monotone scheme
    assert moved.sum() == pytest.approx(ball.sum(), rel=0.03)  # mass
    assert (moved > 0.5).sum() == pytest.approx(ball.sum(), rel=0.2)  # volume of the shape


def test_advection_without_flow_is_identity():
    ball = _ball(16, 4)
    np.testing.assert_array_equal(advect(ball, np.zeros((3, 16, 16, 16), np.float32), steps=5), ball)
