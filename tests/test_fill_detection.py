"""Classical fills (the baselines and USB's starting point) and lesion detection from an anomaly map."""

import numpy as np
import pytest

from usb_model.composite import blend_weight, heal_composite
from usb_model.detection import anomaly_map, detect_lesions
from usb_model.fill import local_tissue, prefill, template_graft, white_matter, wm_fill


@pytest.fixture()
def scene():
    """A two-tissue brain: grey (0.5) shell, white (0.9) core, a dark lesion in the white matter."""
    z, y, x = np.mgrid[:24, :24, :24]
    r = np.sqrt((x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2)
    brain = r < 10
    healthy = np.where(r < 6, 0.9, 0.5) * brain
    lesion = (np.abs(x - 12) < 2) & (np.abs(y - 12) < 2) & (np.abs(z - 12) < 2)
    lesioned = np.where(lesion, 0.1, healthy).astype(np.float32)
    return healthy.astype(np.float32), lesioned, lesion, brain


def test_wm_fill_puts_white_matter_into_the_lesion_only(scene):
    healthy, lesioned, lesion, brain = scene
    out = wm_fill(lesioned, lesion, noise=False)
    assert np.allclose(out[lesion], 0.9, atol=1e-6)
    assert np.array_equal(out[~lesion], lesioned[~lesion])
    noisy = wm_fill(lesioned, lesion, rng=np.random.default_rng(0))
    assert np.array_equal(noisy[~lesion], lesioned[~lesion]) and noisy[lesion].std() >= 0  # white matter here is flat
    wm = white_matter(lesioned, brain, lesion)
    assert wm.any() and not (wm & lesion).any() and lesioned[wm].min() >= 0.9 - 1e-6


def test_template_graft_maps_the_template_onto_the_scan(scene):
    healthy, lesioned, lesion, brain = scene
    template = (healthy - 0.1) / 2  # another scale and offset, same anatomy
    out = template_graft(lesioned, lesion, template, brain=brain)
    assert np.allclose(out[lesion], healthy[lesion], atol=1e-4)
    assert np.array_equal(out[~lesion], lesioned[~lesion])
    # without a template the graft falls back to the white-matter fill; "none" keeps the lesion
    assert np.allclose(prefill(lesioned, lesion, "graft")[lesion], 0.9, atol=1e-6)
    assert np.array_equal(prefill(lesioned, lesion, "none"), lesioned)
    with pytest.raises(ValueError, match="unknown fill"):
        prefill(lesioned, lesion, "paint")


def test_auto_fill_uses_white_matter_inside_white_matter_and_the_graft_elsewhere(scene):
    """Per component: the lesion in the white core gets the white-matter fill; one on the grey
    shell gets the template's anatomy, once it is too large (here: on a 6 mm grid, 5.8 ml) to be
    a hole that the tissue around it fills (usb_model.fill.auto_choice)."""
    healthy, lesioned, lesion, brain = scene
    z, y, x = np.mgrid[:24, :24, :24]
    cortical = (np.abs(x - 12) < 2) & (np.abs(y - 12) < 2) & (np.abs(z - 20) < 2) & brain
    lesioned = np.where(cortical, 0.1, lesioned).astype(np.float32)
    both = lesion | cortical
    template = np.where(brain, 0.3, 0.0).astype(np.float32)  # a template that differs in the white core
    template[~both] = healthy[~both] * 0.5  # ... and maps onto the scan by a line outside the lesions
    out = prefill(lesioned, both, "auto", template=template, spacing=(6, 6, 6))
    assert np.allclose(out[lesion], 0.9, atol=1e-6)  # white-matter fill, not the template
    graft = template_graft(lesioned, both, template)
    assert np.allclose(out[cortical], graft[cortical], atol=1e-5)  # the graft
    assert np.array_equal(out[~both], lesioned[~both])
    # At 1 mm the same dark cortical lesion is 0.03 ml: a hole, filled from the tissue around it.
    small = prefill(lesioned, both, "auto", template=template)
    assert np.allclose(small[cortical], local_tissue(lesioned, both)[cortical], atol=1e-5)


@pytest.mark.parametrize("kind", ["auto", "wm", "local"])
def test_a_fill_on_a_whole_head_reads_the_brain_mask_not_the_scalp(scene, kind):
    """The participant level fills the file as given, often a head: a bright scalp (fat, 1.0 here)
    around the brain is not white matter. Given the brain mask, every fill reads the brain only;
    without it the white-matter fill takes the scalp for white matter."""
    healthy, lesioned, lesion, brain = scene
    z, y, x = np.mgrid[:24, :24, :24]
    r = np.sqrt((x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2)
    scalp = (r >= 10.5) & (r < 12)
    head = np.where(scalp, 1.0, lesioned).astype(np.float32)
    stripped = prefill(lesioned, lesion, kind)
    out = prefill(head, lesion, kind, brain=brain)
    assert np.allclose(out[lesion], stripped[lesion], atol=1e-6)
    assert np.array_equal(out[~lesion], head[~lesion])
    if kind == "wm":
        assert prefill(head, lesion, kind)[lesion].mean() > 0.95  # the scalp's intensity, not 0.9


def test_heal_composite_fills_the_lesion_and_adds_only_the_change_around_it(scene):
    healthy, lesioned, lesion, brain = scene
    healed = np.full_like(lesioned, 0.7)  # a blurry decoder: wrong everywhere...
    change = np.zeros_like(lesioned)  # ...but decode(healed) == decode(input) outside the lesion
    weight = blend_weight(lesion, (1, 1, 1), 1.0, 3.0)
    out = heal_composite(lesioned, healed, change, lesion, weight)
    assert np.allclose(out[lesion], 0.7)
    assert np.array_equal(out[~lesion], lesioned[~lesion])  # the decoder's error never enters
    ints = heal_composite((lesioned * 1000).astype(np.int16), healed * 1000, change, lesion, weight)
    assert ints.dtype == np.int16 and ints[lesion].min() == 700


def test_detection_keeps_large_components_and_drops_specks():
    reconstruction = np.zeros((20, 20, 20), np.float32)
    healed = reconstruction.copy()
    healed[5:10, 5:10, 5:10] = 0.5  # 125 voxels of 1 mm: 0.125 ml
    healed[15, 15, 15] = 0.5  # one voxel
    brain = np.ones_like(reconstruction, bool)
    anomaly = anomaly_map(healed, reconstruction, brain, sigma_vox=0)
    found = detect_lesions(anomaly, 0.2, 0.05, (1, 1, 1))
    assert found[5:10, 5:10, 5:10].all() and not found[15, 15, 15] and found.sum() == 125
    assert not detect_lesions(anomaly, 0.2, 0.2, (1, 1, 1)).any()  # below the minimum volume
    assert not detect_lesions(anomaly, 0.9, 0.0, (1, 1, 1)).any()  # below the threshold
    # samples are averaged; outside the brain the map is zero
    two = np.stack([healed, reconstruction])
    assert np.allclose(anomaly_map(two, reconstruction, brain, sigma_vox=0).max(), 0.25)
    assert anomaly_map(healed, reconstruction, np.zeros_like(brain), sigma_vox=0).max() == 0


def test_a_polarised_map_keeps_the_departures_a_lesion_of_the_contrast_makes():
    """T1w lesions are darker than the tissue healing puts back: "brighter" keeps where healing
    brightened and drops where it darkened (a healthy brain's departures go both ways); "darker"
    the reverse (FLAIR, T2). Averaging samples before the sign lets opposite departures cancel."""
    brain = np.ones((6, 6, 6), bool)
    reconstruction = np.full((6, 6, 6), 0.5, np.float32)
    healed = reconstruction.copy()
    healed[1, 1, 1] = 0.8  # brightened: a healed T1w lesion
    healed[4, 4, 4] = 0.3  # darkened
    brighter = anomaly_map(healed, reconstruction, brain, sigma_vox=0, polarity="brighter")
    darker = anomaly_map(healed, reconstruction, brain, sigma_vox=0, polarity="darker")
    assert np.isclose(brighter[1, 1, 1], 0.3) and brighter[4, 4, 4] == 0
    assert np.isclose(darker[4, 4, 4], 0.2) and darker[1, 1, 1] == 0
    both = np.stack([healed, 2 * reconstruction - healed])  # two samples departing in opposite senses
    assert anomaly_map(both, reconstruction, brain, sigma_vox=0, polarity="brighter").max() == 0
    assert np.isclose(anomaly_map(both, reconstruction, brain, sigma_vox=0).max(), 0.3)
    with pytest.raises(ValueError, match="unknown detect polarity"):
        anomaly_map(healed, reconstruction, brain, polarity="up")
