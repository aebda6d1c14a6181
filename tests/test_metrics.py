"""usb_model.metrics: the pure metric functions, on arrays with known answers."""

import math

import numpy as np
import pytest

from usb_model import metrics as M


@pytest.fixture()
def volume():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij")
    brain = (zz**2 + yy**2 + xx**2) < 0.8
    image = (
        np.where(brain, 0.5 + 0.3 * np.sin(4 * xx) * np.cos(3 * yy), 0.0)
        + 0.01 * rng.standard_normal(brain.shape) * brain
    )
    lesion = ((zz - 0.2) ** 2 + (yy + 0.1) ** 2 + xx**2) < 0.06
    return image, brain, lesion & brain


def test_l1_is_the_mean_absolute_difference_over_the_region(volume):
    image, brain, lesion = volume
    shifted = image + 0.1 * lesion
    assert M.masked_l1(shifted, image, lesion) == pytest.approx(0.1)
    assert M.masked_l1(shifted, image, brain & ~lesion) == pytest.approx(0.0)
    assert M.masked_l1(shifted, image) == pytest.approx(0.1 * lesion.sum() / lesion.size)


def test_psnr_is_infinite_for_identical_images_and_matches_a_known_noise(volume):
    image, brain, _ = volume
    assert math.isinf(M.masked_psnr(image, image, brain, data_range=1.0))
    rng = np.random.default_rng(1)
    sigma = 0.05
    noisy = image + sigma * rng.standard_normal(image.shape)
    expected = 10 * math.log10(1.0 / sigma**2)  # 26.02 dB
    assert M.masked_psnr(noisy, image, brain, data_range=1.0) == pytest.approx(expected, abs=0.15)
    # The data range scales PSNR by 20 log10(range ratio).
    assert M.masked_psnr(noisy, image, brain, data_range=2.0) == pytest.approx(
        expected + 20 * math.log10(2.0), abs=0.15
    )
    # A constant offset of d gives exactly 20 log10(range / d).
    assert M.masked_psnr(image + 0.1, image, brain, data_range=1.0) == pytest.approx(20.0, abs=1e-6)
    with pytest.raises(ValueError):
        M.masked_psnr(image, image, brain, data_range=0)


def test_ssim_is_one_for_identical_images_and_lower_where_they_differ(volume):
    image, brain, lesion = volume
    assert M.masked_ssim(image, image, brain, data_range=1.0) == pytest.approx(1.0)
    damaged = image.copy()
    damaged[lesion] = 0.0
    inside = M.masked_ssim(damaged, image, lesion, data_range=1.0)
    far = brain & ~lesion
    far_away = M.masked_ssim(damaged, image, far, data_range=1.0)
    assert inside < 0.5 < far_away <= 1.0
    smap = M.ssim_map(damaged, image, data_range=1.0)
    assert smap.shape == image.shape
    assert M.region_mean(smap, lesion) == pytest.approx(inside)


def test_empty_regions_give_nan_and_shapes_must_match(volume):
    image, brain, _ = volume
    empty = np.zeros(image.shape, bool)
    assert math.isnan(M.masked_l1(image, image, empty))
    assert math.isnan(M.masked_psnr(image, image, empty, data_range=1.0))
    assert math.isnan(M.masked_ssim(image, image, empty, data_range=1.0))
    with pytest.raises(ValueError, match="differ"):
        M.masked_l1(image, image[:-1])
    with pytest.raises(ValueError, match="mask"):
        M.masked_l1(image, image, brain[:-1])


def test_dice_and_volume():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    assert M.dice(a, b) == 1.0  # both empty: perfect agreement
    a[2:6, 2:6, 2:6] = True  # 64 voxels
    b[4:8, 2:6, 2:6] = True  # 64 voxels, 32 shared
    assert M.dice(a, b) == pytest.approx(2 * 32 / 128)
    assert M.dice(a, a) == pytest.approx(1.0)
    assert M.dice(a, np.zeros_like(a)) == 0.0
    assert M.volume_ml(a, (2.0, 2.0, 2.0)) == pytest.approx(64 * 8 / 1000)


def test_mmd_and_kid_separate_distributions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    same = rng.normal(size=(40, 8))
    shifted = rng.normal(loc=1.5, size=(40, 8))
    assert abs(M.mmd_rbf(x, same)) < 0.05
    assert M.mmd_rbf(x, shifted) > 0.3
    kid_same = M.kid(x, same, subsets=20, subset_size=20, seed=0)
    kid_shift = M.kid(x, shifted, subsets=20, subset_size=20, seed=0)
    assert kid_shift[0] > 10 * abs(kid_same[0])
    assert M.kid(x, shifted, subsets=20, subset_size=20, seed=0) == kid_shift  # reproducible by seed
    with pytest.raises(ValueError, match="at least 2"):
        M.mmd_rbf(x[:1], same)


def test_intensity_features_are_grid_and_scale_independent(volume):
    image, brain, _ = volume
    f = M.intensity_features(image, brain)
    assert f.shape == (32,)
    assert np.sum(f) * (1.25 / 32) == pytest.approx(1.0)  # a density
    assert np.allclose(M.intensity_features(1000 * image, brain), f)
    coarse = M.intensity_features(image[::2, ::2, ::2], brain[::2, ::2, ::2])
    assert np.abs(coarse - f).sum() * (1.25 / 32) < 0.5  # total variation between the two densities
    with pytest.raises(ValueError):
        M.intensity_features(np.zeros((4, 4, 4)))
