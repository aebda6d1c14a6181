"""The four tasks on an untrained tiny model: shapes, ranges, determinism and guidance logic.

Quality needs a trained model (benchmarks/quality.py); these tests check the mechanics that
hold for any weights.
"""

import pytest
import torch

from usb_model.tasks import USB

GRID = (32, 32, 32)


@pytest.fixture()
def usb(tiny_networks):
    return USB(tiny_networks, device="cpu")


@pytest.fixture(scope="module")
def brain():
    g = torch.Generator().manual_seed(0)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in GRID], indexing="ij")
    inside = (zz**2 + yy**2 + xx**2) < 0.7
    return (inside.float() * (0.6 + 0.2 * torch.rand(GRID, generator=g))).clamp(0, 1)


@pytest.fixture(scope="module")
def lesion():
    mask = torch.zeros(GRID)
    mask[12:18, 10:16, 14:20] = 1
    return mask


def test_generate_pairs_shapes_and_ranges(usb):
    out = usb.generate_pairs(2, seed=0, steps=5)
    assert out.images.shape == (2, *GRID) and out.masks.shape == (2, *GRID)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert set(out.masks.unique().tolist()) <= {0.0, 1.0}


def test_generate_from_mask_shapes(usb, lesion):
    out = usb.generate_from_mask(lesion, 3, seed=0, steps=5)
    assert out.images.shape == (3, *GRID)
    assert torch.equal(out.masks[1], lesion)


def test_heal_shapes_uncertainty_and_composite(usb, brain, lesion):
    out = usb.heal(brain, lesion, n_samples=3, seed=0, stride=50)
    assert out.image.shape == GRID and out.samples.shape == (3, *GRID)
    assert out.std is not None and out.std.shape == GRID and out.std.min() >= 0
    assert out.image.min() >= 0 and out.image.max() <= 1
    outside = out.region == 0
    assert outside.any() and (~outside).any()
    assert torch.equal(out.image[outside], brain[outside])  # bit-identical outside the edit region


def test_heal_without_mask_does_not_composite(usb, brain):
    out = usb.heal(brain, seed=0, stride=100)
    assert out.region is None and out.std is None
    assert not torch.equal(out.image, brain)


def test_same_seed_same_output_different_seed_different_output(usb, brain, lesion):
    a = usb.heal(brain, seed=7, stride=60, composite=False).image
    b = usb.heal(brain, seed=7, stride=60, composite=False).image
    c = usb.heal(brain, seed=8, stride=60, composite=False).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1 = usb.generate_pairs(1, seed=3, steps=4)
    g2 = usb.generate_pairs(1, seed=3, steps=4)
    assert torch.equal(g1.images, g2.images) and torch.equal(g1.masks, g2.masks)
    e1 = usb.embed(brain, lesion, seed=5, stride=100).image
    e2 = usb.embed(brain, lesion, seed=5, stride=100).image
    assert torch.equal(e1, e2)


def test_alpha0_zero_returns_the_input_latent(usb, brain):
    # lambda = exp(0) = 1 everywhere: every step is pulled all the way back to the input latent,
    # so the result is the autoencoder's reconstruction of the input, whatever the denoiser does.
    with torch.no_grad():
        recon = usb._decode(usb.networks.encode(brain.reshape(1, 1, *GRID)))[0, 0]
    out = usb.heal(brain, seed=0, stride=100, alpha0=0.0)
    assert torch.allclose(out.image, recon, atol=1e-6)


def test_larger_alpha0_releases_more(usb, brain):
    with torch.no_grad():
        recon = usb._decode(usb.networks.encode(brain.reshape(1, 1, *GRID)))[0, 0]
    change = [(usb.heal(brain, seed=0, stride=50, alpha0=a).image - recon).abs().mean().item() for a in (1.0, 20.0, 1e6)]
    assert change[0] < change[1] < change[2]
    free = (usb.heal(brain, seed=0, stride=50, acg=False).image - recon).abs().mean().item()
    assert change[2] == pytest.approx(free, rel=1e-3)  # a huge alpha0 is no guidance at all


def test_embed_needs_a_lesion_and_keeps_the_outside(usb, brain, lesion):
    with pytest.raises(ValueError, match="non-empty"):
        usb.embed(brain, torch.zeros(GRID))
    out = usb.embed(brain, lesion, seed=0, stride=100, n_samples=2)
    outside = out.region == 0
    assert torch.equal(out.image[outside], brain[outside])
    assert out.std.shape == GRID


def test_wrong_grid_and_nan_are_refused(usb, brain):
    with pytest.raises(ValueError, match="model grid"):
        usb.heal(torch.zeros(16, 16, 16))
    bad = brain.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        usb.heal(bad)
