"""The four tasks on an untrained tiny model: shapes, ranges, determinism and guidance logic.

Quality needs a trained model (benchmarks/quality.py); these tests check the mechanics that
hold for any weights.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from usb_model.fill import prefill
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


def test_paper_acg_heal_without_composite_returns_the_healed_brain(usb, brain):
    out = usb.heal(brain, mode="acg", seed=0, stride=100, composite=False)
    assert out.region is None and out.std is None and out.params["mode"] == "acg"
    assert out.params["t_start"] == usb.cfg.sampling.t_start_heal
    assert not torch.equal(out.image, brain)


def test_mask_mode_walks_at_mask_stride_and_acg_at_edit_stride(usb, brain, lesion, monkeypatch):
    """A converted checkpoint keeps the paper's stride for ACG healing and takes its own
    (mask_stride) for mask-aware healing; without mask_stride both use edit_stride."""
    s = usb.cfg.sampling
    monkeypatch.setattr(s, "edit_stride", 100)
    assert usb.heal(brain, lesion, seed=0, fill="wm", composite=False).params["stride"] == 100
    monkeypatch.setattr(s, "mask_stride", 50)
    assert usb.heal(brain, lesion, seed=0, fill="wm", composite=False).params["stride"] == 50
    assert usb.heal(brain, mode="acg", seed=0, composite=False).params["stride"] == 100
    assert usb.heal(brain, lesion, seed=0, stride=25, fill="wm", composite=False).params["stride"] == 25


def test_mask_heal_frees_the_lesion_and_records_its_parameters(usb, brain, lesion):
    out = usb.heal(brain, lesion, seed=0, stride=50, fill="wm", band_mm=(1.0, 3.0))
    p = out.params
    assert p["mode"] == "mask" and p["fill"] == "wm" and p["t_start"] == usb.cfg.sampling.t_start_mask
    assert p["band_mm"] == (1.0, 3.0)
    inside = lesion > 0
    # inside the lesion the result is the healed fill; outside the band the input, exactly
    assert torch.allclose(out.image[inside], out.healed[inside], atol=1e-6)
    assert torch.equal(out.image[out.region == 0], brain[out.region == 0])
    with pytest.raises(ValueError, match="needs a non-empty lesion mask"):
        usb.heal(brain, mode="mask")
    with pytest.raises(ValueError, match="unknown heal mode"):
        usb.heal(brain, lesion, mode="nope")


def test_fill_residual_is_the_fill_plus_the_models_change_to_it(usb, brain, lesion):
    """With fill_residual the healed brain is the fill plus healed - decode(filled): where the
    fill is the input (outside the lesion) that is the input plus the model's change, so the
    autoencoder's blur does not enter; the change itself comes back for the app's native fill."""
    plain = usb.heal(brain, lesion, seed=0, stride=50, fill="wm", fill_residual=False, composite=False)
    out = usb.heal(brain, lesion, seed=0, stride=50, fill="wm", fill_residual=True, composite=False)
    assert plain.fill_change is None and plain.params["fill_residual"] is False
    assert out.params["fill_residual"] is True and out.fill_change.shape == GRID
    outside = lesion == 0
    inner = outside & (brain + out.fill_change > 0) & (brain + out.fill_change < 1)  # not clamped
    assert torch.allclose(out.healed[inner], (brain + out.fill_change)[inner], atol=1e-5)
    assert not torch.allclose(out.healed[inner], plain.healed[inner], atol=1e-3)  # not the decoded brain
    # Inside the lesion the change is bounded by the fill's local range: the white-matter fill is
    # flat, so deep inside the lesion nothing of the coarse change is left.
    filled = prefill(brain.numpy(), lesion.numpy(), "wm")
    deep = ndimage.binary_erosion(lesion.numpy() > 0, iterations=2)
    assert deep.any() and np.allclose(out.healed.numpy()[deep], filled[deep], atol=1e-6)


def test_detect_mode_leaves_a_brain_without_detections_bit_identical(usb, brain):
    out = usb.heal(brain, seed=0, stride=100, detect_threshold=1e9)
    assert out.params["mode"] == "detect" and out.anomaly is not None
    assert not bool(out.lesion.any()) and bool((out.region == 0).all())
    assert torch.equal(out.image, brain)


def test_detect_mode_heals_what_it_detects(usb, brain):
    # threshold 0: every brain voxel with any departure is "lesion", and gets healed
    out = usb.heal(brain, seed=0, stride=100, detect_threshold=0.0, detect_min_ml=0.0)
    assert bool(out.lesion.any()) and out.anomaly.shape == GRID
    assert not torch.equal(out.image, brain)
    assert bool((out.region[out.lesion > 0] == 1).all())


def test_same_seed_same_output_different_seed_different_output(usb, brain, lesion):
    a = usb.heal(brain, mode="acg", seed=7, stride=60, composite=False).image
    b = usb.heal(brain, mode="acg", seed=7, stride=60, composite=False).image
    c = usb.heal(brain, mode="acg", seed=8, stride=60, composite=False).image
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
    out = usb.heal(brain, mode="acg", seed=0, stride=100, alpha0=0.0, composite=False)
    assert float(out.change.abs().max()) < 1e-5  # decode(healed) - decode(input)


def test_larger_alpha0_releases_more(usb, brain):
    def change(**kw):
        return usb.heal(brain, mode="acg", seed=0, stride=50, composite=False, **kw).change.abs().mean().item()

    change_by_alpha = [change(alpha0=a) for a in (1.0, 20.0, 1e6)]
    assert change_by_alpha[0] < change_by_alpha[1] < change_by_alpha[2]
    free = change(acg=False)
    change = change_by_alpha
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


def test_generate_lesion_keeps_the_pair_closest_to_the_brain_among_those_in_the_brain(usb, brain, monkeypatch):
    """Paired sampling proposes (mask, brain) pairs; the lesion kept is the one whose generated
    brain is nearest the input, among those mostly inside the brain, and it is cut to the brain."""
    from usb_model.tasks import GenerationResult

    inside = torch.zeros(GRID)
    inside[12:18, 10:16, 14:20] = 1  # well inside the ball
    outside = torch.zeros(GRID)
    outside[0:4, 0:4, 0:4] = 1  # in a corner, outside the brain
    partly = inside.clone()
    partly[0:2, 0:2, 0:2] = 1  # mostly inside, a few voxels outside
    images = torch.stack([brain, torch.zeros(GRID) + 0.3, brain * 0.98, brain])
    masks = torch.stack([outside, inside, partly, torch.zeros(GRID)])
    monkeypatch.setattr(usb, "generate_pairs", lambda n, **kw: GenerationResult(images=images[:n], masks=masks[:n]))
    out = usb.generate_lesion(brain, n_candidates=4, seed=3)
    # candidate 0 has the input's own brain but its lesion lies outside; 3 has no lesion
    assert out.info["chosen"] == 2 and out.info["qualified"] == 2
    assert torch.equal(out.mask, partly * (brain > 0).float())
    assert out.mask.sum() < partly.sum()  # the voxels outside the brain were dropped
    assert out.info["volume_ml"] == pytest.approx(float(out.mask.sum()) * np.prod(usb.cfg.grid.voxel_size) / 1000)
    with pytest.raises(ValueError, match="needs a brain"):
        usb.generate_lesion(torch.zeros(GRID))


def test_generate_lesion_runs_paired_sampling_deterministically(usb, brain):
    a = usb.generate_lesion(brain, n_candidates=2, seed=1, steps=4)
    b = usb.generate_lesion(brain, n_candidates=2, seed=1, steps=4)
    assert torch.equal(a.mask, b.mask) and a.info == b.info
    assert a.mask.shape == GRID and not bool((a.mask > 0)[brain == 0].any())


@pytest.mark.parametrize("ae_passes", ["full", "edit"])
def test_a_grown_masks_fill_reads_the_mask_as_given(usb, brain, lesion, monkeypatch, ae_passes):
    """heal(given=): the fill of the grown mask gets the mask as given, with the app's reading
    (usb_model.fill.GIVEN_DARK_RATIO), on both pass paths; a later call without it gets none."""
    import usb_model.tasks as tasks
    from usb_model.fill import GIVEN_DARK_RATIO

    seen = []

    def spy(image, mask, kind, **kwargs):
        seen.append(kwargs)
        return prefill(image, mask, kind, **kwargs)

    monkeypatch.setattr(tasks, "prefill", spy)
    grown = torch.from_numpy(ndimage.binary_dilation(lesion.numpy() > 0, iterations=2).astype(np.float32))
    usb.heal(brain, grown, seed=0, stride=100, fill="auto", ae_passes=ae_passes, given=lesion.numpy())
    assert np.array_equal(seen[-1]["given"], lesion.numpy() > 0) and seen[-1]["given_dark"] == GIVEN_DARK_RATIO
    usb.heal(brain, grown, seed=0, stride=100, fill="auto", ae_passes=ae_passes)
    assert seen[-1]["given"] is None and seen[-1]["given_dark"] is None


def test_detection_follows_the_models_polarity_and_smoothing(usb, brain, monkeypatch):
    """The checkpoint's detect_polarity and detect_sigma_vox shape the anomaly map: a polarised map
    is never above the two-sided one of the same free pass."""
    import dataclasses

    default = usb.heal(brain, seed=0, stride=100, detect_threshold=1e9).anomaly
    monkeypatch.setattr(
        usb,
        "cfg",
        dataclasses.replace(usb.cfg, sampling=dataclasses.replace(usb.cfg.sampling, detect_polarity="brighter")),
    )
    brighter = usb.heal(brain, seed=0, stride=100, detect_threshold=1e9).anomaly
    assert not torch.equal(brighter, default)
    assert bool((brighter <= default + 1e-6).all())
