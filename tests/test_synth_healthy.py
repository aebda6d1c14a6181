"""Healthy-brain synthesis and lesion encoding."""

import numpy as np
import pytest

from usb_model.config import GridConfig
from usb_model.synth import encode_lesion, random_lesion, synth_healthy
from usb_model.synth.healthy import FLAIR_TOP
from usb_model.synth.intensity import ContrastParams
from usb_model.template import load_template

VOX = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def tpl():
    return load_template(GridConfig(shape=(40, 48, 40), voxel_size=VOX))


def test_same_seed_same_brain(tpl):
    a = synth_healthy(tpl, np.random.default_rng(3))
    b = synth_healthy(tpl, np.random.default_rng(3))
    c = synth_healthy(tpl, np.random.default_rng(4))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.brain_mask, b.brain_mask)
    assert np.abs(a.image - c.image).mean() > 0.01


def test_brain_is_skull_stripped_and_in_range(tpl):
    for seed in range(3):
        brain = synth_healthy(tpl, np.random.default_rng(seed))
        assert brain.image.dtype == np.float32 and brain.image.shape == tpl.shape
        assert brain.image.min() >= 0 and brain.image.max() <= 1
        assert np.all(brain.image[~brain.brain_mask] == 0)
        # a deformed, but still template-like, brain
        overlap = (brain.brain_mask & tpl.brain_mask).sum() / tpl.brain_mask.sum()
        assert 0.75 < overlap <= 1.0
        assert brain.wm is not None and brain.wm.shape == tpl.shape


@pytest.mark.parametrize("contrast", ["T1w", "FLAIR"])
def test_tissue_contrast_is_plausible(tpl, contrast):
    """Tissue means in the contrast's order (without the bias field, which may locally flip it)."""
    params = ContrastParams(bias_std=0.0)
    for seed in range(6):
        brain = synth_healthy(tpl, np.random.default_rng(seed), contrast, intensity=params)
        wm = brain.image[brain.wm > 0.8].mean()
        gm = brain.image[brain.gm > 0.7].mean()
        csf = brain.image[brain.csf > 0.8].mean()
        if contrast == "T1w":
            assert wm > gm > csf
        else:
            assert gm > wm > csf
            assert np.percentile(brain.image[brain.brain_mask], 99.5) <= FLAIR_TOP + 0.02


def test_user_scan_gets_light_augmentation(tpl):
    scan = np.array(tpl.t1w) * 700.0  # arbitrary units
    brain = synth_healthy(scan, np.random.default_rng(0), voxel_size=VOX)
    assert brain.gm is None and brain.image.max() <= 1.0
    corr = np.corrcoef(brain.image.ravel(), tpl.t1w.ravel())[0, 1]
    assert corr > 0.8
    np.testing.assert_array_equal(brain.parenchyma, brain.brain_mask)


def test_invalid_contrast(tpl):
    with pytest.raises(ValueError):
        synth_healthy(tpl, np.random.default_rng(0), "T2w")


@pytest.fixture(scope="module")
def brain_and_lesion(tpl):
    brain = synth_healthy(tpl, np.random.default_rng(11))
    lesion = random_lesion(brain.parenchyma, np.random.default_rng(12), size=(10.0, 20.0), voxel_size=VOX)
    assert lesion.sum() > 20
    return brain, lesion


def test_t1w_lesions_darken_flair_lesions_brighten(brain_and_lesion):
    brain, lesion = brain_and_lesion
    t1 = encode_lesion(brain.image, lesion, np.random.default_rng(0), "T1w")
    fl = encode_lesion(brain.image, lesion, np.random.default_rng(0), "FLAIR")
    mean = brain.image[lesion].mean()
    assert t1[lesion].mean() < 0.5 * mean  # upstream: mu in [0.75, 1] x mean, negative
    assert fl[lesion].mean() > 1.2 * mean
    for out in (t1, fl):
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        # outside the mask, the image is the healthy one, bit for bit
        np.testing.assert_array_equal(out[~lesion], brain.image[~lesion])
    # texture: the lesion is not flat
    assert t1[lesion].std() > 0 and fl[lesion].std() > 0


def test_encoding_is_deterministic_and_empty_mask_is_identity(brain_and_lesion):
    brain, lesion = brain_and_lesion
    a = encode_lesion(brain.image, lesion, np.random.default_rng(5))
    b = encode_lesion(brain.image, lesion, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    same = encode_lesion(brain.image, np.zeros_like(lesion), np.random.default_rng(5))
    np.testing.assert_array_equal(same, brain.image)
    assert same is not brain.image


def test_partial_volume_rim(brain_and_lesion):
    """Boundary voxels change less than core voxels (soft rim inside the mask)."""
    from scipy import ndimage

    brain, lesion = brain_and_lesion
    out = encode_lesion(brain.image, lesion, np.random.default_rng(1), "T1w", texture=0.0)
    core = ndimage.binary_erosion(lesion, iterations=1)
    rim = lesion & ~core
    change = np.abs(out - brain.image) / np.maximum(brain.image, 1e-3)
    assert change[rim].mean() < change[core].mean()
