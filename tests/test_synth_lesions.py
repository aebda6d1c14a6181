"""Random lesion shapes: determinism, inside the brain, sizes over the stated range."""

import numpy as np
import pytest

from usb_model.config import GridConfig
from usb_model.synth.lesions import SIZE_PRESETS_ML, draw_volume_ml, lesion_volume_ml, random_lesion
from usb_model.template import load_template

VOX = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def tpl():
    return load_template(GridConfig(shape=(44, 52, 44), voxel_size=VOX))


def test_same_seed_same_lesion(tpl):
    a = random_lesion(tpl.parenchyma, np.random.default_rng(7), size="medium", voxel_size=VOX)
    b = random_lesion(tpl.parenchyma, np.random.default_rng(7), size="medium", voxel_size=VOX)
    c = random_lesion(tpl.parenchyma, np.random.default_rng(8), size="medium", voxel_size=VOX)
    assert a.dtype == bool and a.shape == tpl.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_lesions_lie_inside_the_brain(tpl, size):
    for seed in range(6):
        lesion = random_lesion(tpl.brain_mask, np.random.default_rng([seed, 1]), size=size, voxel_size=VOX)
        assert lesion.any()
        assert not np.any(lesion & ~tpl.brain_mask)


def test_wm_restricted_lesions_lie_in_white_matter(tpl):
    for seed in range(6):
        lesion = random_lesion(tpl.brain_mask, np.random.default_rng(seed), size="wmh", wm=tpl.wm, voxel_size=VOX)
        assert lesion.any()
        assert np.all(tpl.wm[lesion] >= 0.5)


def test_size_distribution_covers_the_range(tpl):
    """Log-uniform volumes over [0.5, 100] mL: realised volumes track targets and span the range."""
    lo, hi = 0.5, 100.0
    targets, volumes = [], []
    for seed in range(24):
        targets.append(draw_volume_ml((lo, hi), np.random.default_rng(seed)))
        lesion = random_lesion(tpl.parenchyma, np.random.default_rng(seed), size=(lo, hi), voxel_size=VOX)
        volumes.append(lesion_volume_ml(lesion, VOX))
    targets, volumes = np.array(targets), np.array(volumes)
    assert volumes.min() <= 2 * lo and volumes.max() >= hi / 2
    ratio = volumes / targets
    assert np.median(np.abs(np.log(ratio))) < np.log(1.25)
    assert np.all((ratio > 0.25) & (ratio < 2.0))
    # Every decade of the range is populated.
    for a, b in [(0.5, 5), (5, 50), (50, 100)]:
        assert np.any((volumes >= a * 0.7) & (volumes <= b * 1.3))


def test_presets_order_sizes(tpl):
    def vols(size):
        return [
            lesion_volume_ml(random_lesion(tpl.parenchyma, np.random.default_rng(s), size=size, voxel_size=VOX), VOX)
            for s in range(5)
        ]

    assert max(vols("small")) < min(vols("large"))


def test_draw_volume_ml_forms():
    rng = np.random.default_rng(0)
    assert draw_volume_ml(3.5, rng) == 3.5
    assert draw_volume_ml(lambda r: 2.0, rng) == 2.0
    lo, hi = SIZE_PRESETS_ML["any"]
    draws = [draw_volume_ml("any", rng) for _ in range(2000)]
    assert lo <= min(draws) and max(draws) <= hi
    # log-uniform: about a third of draws per third of the log-range
    edges = np.exp(np.linspace(np.log(lo), np.log(hi), 4))
    counts = np.histogram(draws, edges)[0]
    assert counts.min() > 550
    with pytest.raises(ValueError):
        draw_volume_ml("huge", rng)
    with pytest.raises(ValueError):
        draw_volume_ml((5.0, 1.0), rng)


def test_prior_mask_is_randomized_and_kept_in_brain(tpl):
    prior = np.zeros(tpl.shape, bool)
    prior[12:20, 24:32, 20:26] = True  # a block in the left hemisphere
    prior &= tpl.parenchyma
    out = [random_lesion(tpl.parenchyma, np.random.default_rng(s), prior=prior, voxel_size=VOX) for s in range(4)]
    for lesion in out:
        assert lesion.any() and not np.any(lesion & ~tpl.parenchyma)
        assert 0.3 < lesion.sum() / prior.sum() < 3.0
    assert any(not np.array_equal(out[0], o) for o in out[1:])


def test_no_allowed_voxel_gives_empty_mask():
    empty = np.zeros((10, 10, 10), bool)
    assert not random_lesion(empty, np.random.default_rng(0)).any()
