import math

import numpy as np
import pytest
import torch

from usb_model.composite import blend_weight, composite, within_local_range
from usb_model.guidance import acg_alpha, acg_weight, apply_guidance, lcg_weight, soft_lesion_map


def test_acg_keeps_agreement_and_releases_disagreement():
    y0 = torch.zeros(1, 3, 4, 4, 4)
    y0_hat = y0.clone()
    y0_hat[..., :2] = 1.0  # the model wants to change half of the volume
    w = acg_weight(y0, y0_hat, t=150, alpha0=20, k=0.5, t_norm=300)
    assert torch.all(w[..., 2:] == 1.0)
    assert torch.all(w[..., :2] < 1e-6)
    y_prev = torch.randn_like(y0)
    guided = apply_guidance(y_prev, y0, w)
    assert torch.equal(guided[..., 2:], y0[..., 2:])
    assert torch.allclose(guided[..., :2], y_prev[..., :2], atol=1e-5)


def test_acg_alpha_follows_eq_12():
    assert acg_alpha(0, 20, 0.5, 300) == 20
    assert acg_alpha(300, 20, 0.5, 300) == pytest.approx(20 * math.exp(-0.5))


def test_lcg_is_one_minus_eta_inside_a_solid_mask():
    mask = torch.zeros(1, 1, 32, 32, 32)
    mask[..., 8:32, 8:32, 8:32] = 1  # latent voxels 2..7
    x_lesion = soft_lesion_map(mask, (3, 8, 8, 8), pool=3)
    for eta in (1.0, 0.6):
        w = lcg_weight(x_lesion, eta)
        assert torch.allclose(w[..., 3:7, 3:7, 3:7], torch.full((1, 1, 4, 4, 4), 1 - eta))
        assert torch.all(w[..., 0, 0, 0] == 1.0)


def test_blend_weight_is_zero_beyond_the_band_and_one_near_the_mask():
    mask = np.zeros((40, 40, 40), bool)
    mask[18:22, 18:22, 18:22] = True
    w = blend_weight(mask, spacing=(1, 1, 1), inner_mm=2, outer_mm=6)
    assert w[mask].min() == 1.0
    assert w[20, 20, 23] == 1.0  # 2 mm from the mask
    assert 0 < w[20, 20, 25] < 1  # 4 mm from the mask
    assert w[20, 20, 28] == 0.0  # 7 mm from the mask
    original = np.random.default_rng(0).integers(0, 1000, mask.shape).astype(np.int16)
    edited = np.zeros(mask.shape, np.float32)
    out = composite(original, edited, w)
    assert out.dtype == np.int16
    assert np.array_equal(out[w == 0], original[w == 0])
    assert np.all(out[mask] == 0)


def test_within_local_range_bounds_values_by_the_references_neighbourhood():
    """A change laid over a fill may move a voxel within what its 3^3 neighbourhood of the fill
    spans, never past it; outside the region the values pass through untouched."""
    reference = np.zeros((9, 9, 9))
    reference[:, :, 5:] = 10.0  # a step: 0 on one side, 10 on the other
    region = np.zeros(reference.shape, bool)
    region[2:7, 2:7, 1:8] = True
    values = reference + 4.0  # lifts everything by 4
    out = within_local_range(values, reference, region)
    assert np.array_equal(out[~region], values[~region])
    assert np.all(out[region] >= 0) and np.all(out[region] <= 10.0)
    assert np.all(out[2:7, 2:7, 1:4] == 0.0)  # flat neighbourhood at 0: the lift is gone
    assert np.all(out[2:7, 2:7, 4] == 4.0)  # beside the step the range is 0..10: the lift stays
    assert np.all(out[2:7, 2:7, 6:8] == 10.0)  # flat at 10: clipped back
    assert np.array_equal(within_local_range(values, reference, np.zeros_like(region)), values)
