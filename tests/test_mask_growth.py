"""Healing what users bring: masks that miss the lesion's rim (usb_model.mask_growth) and fills
that keep the subject's own tissue for subtle lesions (usb_model.fill: local, lift, auto)."""

import numpy as np
import pytest
from scipy import ndimage

import usb_model.fill as fill_module
from usb_model.fill import (
    AUTO_CODES,
    GIVEN_DARK_RATIO,
    auto_choice,
    hole_fill,
    lesion_contrast,
    lift_fill,
    local_tissue,
    prefill,
)
from usb_model.mask_growth import dilate_mm, fit_dark, grow_by_grid, grow_by_image, grow_mask


def _ball(shape, centre, radius):
    grid = np.indices(shape).astype(np.float32)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) <= radius


@pytest.fixture()
def textured():
    """White matter (0.9) with a smooth shading across it and fine noise: a real scan's tissue."""
    rng = np.random.default_rng(0)
    shape = (32, 32, 32)
    brain = _ball(shape, (16, 16, 16), 14)
    shading = 0.9 + 0.1 * (np.indices(shape)[0] / shape[0] - 0.5)
    tissue = (shading + rng.normal(0, 0.02, shape)).astype(np.float32) * brain
    return tissue, brain


def test_local_tissue_interpolates_the_shading_and_leaves_the_rest(textured):
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 4)
    dark = np.where(lesion, 0.2, tissue).astype(np.float32)
    out = local_tissue(dark, lesion, brain=brain)
    assert np.array_equal(out[~lesion], dark[~lesion])
    assert np.abs(out[lesion] - tissue[lesion]).mean() < 0.03  # the shading comes back, not the dark core
    # a lesion wider than the kernel reaches is still filled everywhere
    big = _ball(tissue.shape, (16, 16, 16), 9)
    wide = local_tissue(np.where(big, 0.2, tissue).astype(np.float32), big, brain=brain)
    assert wide[big].min() > 0.8


def test_lift_keeps_the_subjects_texture_of_a_subtle_lesion(textured):
    """A lesion that darkens tissue by a fifth: lifting brings back the tissue with its own
    fine texture, closer to the truth than any flat fill."""
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 4)
    subtle = np.where(lesion, tissue * 0.8, tissue).astype(np.float32)
    lifted = lift_fill(subtle, lesion, brain=brain)
    flat = prefill(subtle, lesion, "wm")
    err = lambda a: float(np.abs(a[lesion] - tissue[lesion]).mean())  # noqa: E731
    assert err(lifted) < 0.6 * err(flat)
    assert np.corrcoef(lifted[lesion], tissue[lesion])[0, 1] > 0.5  # the texture is the subject's
    assert np.array_equal(lifted[~lesion], subtle[~lesion])
    # healthy voxels inside a too-large mask are not brightened past their tissue
    large = dilate_mm(lesion, (1, 1, 1), 2.0)
    again = lift_fill(subtle, large, brain=brain)
    ring = large & ~lesion
    assert np.abs(again[ring] - tissue[ring]).mean() < 0.02  # the noise's own size


def test_local_tissue_fills_on_a_grid_coarser_than_its_shell(textured):
    """On the model's 3 mm grid the 2 mm shell around a lesion holds no voxel centre: the shell
    widens to the neighbouring voxels, so the fill (and the contrast auto reads from it) is the
    tissue around the lesion, not the lesion itself."""
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 2)
    dark = np.where(lesion, 0.2, tissue).astype(np.float32)
    out = local_tissue(dark, lesion, brain=brain, spacing=(3, 3, 3))
    assert np.abs(out[lesion] - tissue[lesion]).mean() < 0.05
    assert lesion_contrast(dark, lesion, brain=brain, spacing=(3, 3, 3))[lesion].max() < 0.3


def test_auto_fills_each_lesion_by_its_contrast_size_and_rim(textured, monkeypatch):
    """auto_choice's order: a small dark hole from the tissue around it, a subtle lesion with the
    white-matter mean, a large dark lesion in white matter with the white-matter mean, and a large
    one outside white matter (its rim grey matter) with the graft. (The size that makes a lesion
    large is set below this small scene's: the order is what is tested here.)"""
    monkeypatch.setattr("usb_model.fill.AUTO_LOCAL_ML", 1.0)
    tissue, brain = textured
    subtle = _ball(tissue.shape, (24, 10, 16), 3)
    hole = _ball(tissue.shape, (24, 22, 16), 3)  # 0.12 ml
    large = _ball(tissue.shape, (10, 16, 16), 7.5)  # 1.8 ml, its core 1.1 ml
    image = np.where(subtle, tissue * 0.8, tissue)
    image = np.where(hole | large, 0.15, image).astype(np.float32)
    lesions = subtle | hole | large
    contrast = lesion_contrast(image, lesions, brain=brain)
    assert contrast[subtle].min() > 0.7 and contrast[hole].max() < 0.3 and contrast[large].max() < 0.3
    choice = auto_choice(image, lesions)
    assert (choice[subtle] == AUTO_CODES["wm"]).all()
    assert (choice[hole] == AUTO_CODES["local"]).all()
    assert (choice[large] == AUTO_CODES["wm"]).all()  # its rim is white matter
    assert (choice[~lesions] == 0).all()
    # A mask drawn 1 mm too large around the hole: the contrast and size are read on its core.
    generous = dilate_mm(hole, (1, 1, 1), 1.0) & brain
    assert (auto_choice(image, generous)[generous] == AUTO_CODES["local"]).all()
    template = np.where(brain, 0.5, 0.0).astype(np.float32)
    out = prefill(image, lesions, "auto", template=template)
    assert np.allclose(out[subtle], prefill(image, lesions, "wm")[subtle], atol=1e-5)
    assert np.allclose(out[hole], hole_fill(image, hole, lesions=lesions)[hole], atol=1e-5)
    assert np.array_equal(out[~lesions], image[~lesions])
    # The same large lesion with a grey-matter rim (tissue at 0.6 around it) is grafted.
    grey = dilate_mm(large, (1, 1, 1), 3.0) & ~large
    cortical = np.where(grey, 0.6 * tissue, image).astype(np.float32)
    assert (auto_choice(cortical, lesions)[large] == AUTO_CODES["graft"]).all()
    graft = prefill(cortical, lesions, "auto", template=template)
    assert np.allclose(graft[large], prefill(cortical, large, "graft", template=template)[large], atol=1e-5)


def test_a_dark_lesion_read_pale_through_a_generous_mask_in_grey_matter_keeps_its_local_fill(textured, monkeypatch):
    """A lacune in grey matter whose mask is drawn generously reads pale on its 1 mm core (tissue
    and its rim inside it) and, before 2026-12-07, got the white-matter mean: white in grey matter.
    Its 2 mm core is still dark, so it is filled from the grey matter around it
    (fill.AUTO_GREY_TISSUE). A lesion pale at every depth keeps the white-matter mean, in grey
    matter too, and so does the same lacune in white matter."""
    tissue, brain = textured
    shape = tissue.shape
    grey = _ball(shape, (16, 16, 8), 6) | _ball(shape, (16, 16, 24), 6)
    image = np.where(grey, 0.6 * tissue, tissue)
    lacune, pale, white = (16, 16, 8), (16, 16, 24), (6, 16, 16)
    for centre in (lacune, white):  # a dark centre, its generous mask's shell nearly healthy
        image = np.where(_ball(shape, centre, 1.5), 0.3 * image, image)
        image = np.where(_ball(shape, centre, 3.5) & ~_ball(shape, centre, 1.5), 0.95 * image, image)
    image = np.where(_ball(shape, pale, 3), 0.8 * image, image).astype(np.float32)
    masks = {
        name: _ball(shape, centre, 3.5 if name != "pale" else 3)
        for name, centre in (("lacune", lacune), ("pale", pale), ("white", white))
    }
    lesions = masks["lacune"] | masks["pale"] | masks["white"]
    contrast = lesion_contrast(image, lesions, brain=brain)
    assert contrast[lesions].min() > fill_module.SUBTLE_RATIO  # all three read pale on the 1 mm core
    choice = auto_choice(image, lesions, brain=brain)
    assert (choice[masks["lacune"]] == AUTO_CODES["local"]).all()
    assert (choice[masks["pale"]] == AUTO_CODES["wm"]).all()
    assert (choice[masks["white"]] == AUTO_CODES["wm"]).all()
    out = prefill(image, lesions, "auto", brain=brain)
    healthy_grey = float(np.median((0.6 * tissue)[masks["lacune"]]))
    assert abs(float(np.median(out[masks["lacune"]])) - healthy_grey) < 0.08  # grey, not 0.9
    monkeypatch.setattr("usb_model.fill.AUTO_GREY_TISSUE", None)  # the former rule: the mean
    before = prefill(image, lesions, "auto", brain=brain)
    assert float(np.median(before[masks["lacune"]])) > healthy_grey + 0.2


def test_hole_fill_continues_the_tissues_slope_where_the_weighted_mean_flattens_it():
    """A hole in tissue whose intensity rises steeply across it: the biharmonic fill follows the
    rise, the Gaussian mean of the tissue around it is pulled toward its nearer side."""
    shape = (32, 32, 32)
    brain = _ball(shape, (16, 16, 16), 14)
    ramp = (0.5 + 0.4 * np.indices(shape)[0] / shape[0]).astype(np.float32) * brain
    hole = _ball(shape, (16, 16, 16), 4)
    image = np.where(hole, 0.1, ramp).astype(np.float32)
    out = hole_fill(image, hole)
    error = np.abs(out - ramp)[hole].mean()
    assert error < 0.002 < np.abs(local_tissue(image, hole) - ramp)[hole].mean()
    assert np.array_equal(out[~hole], image[~hole])


def test_hole_fill_reaches_past_a_mask_that_stops_short_of_its_lesions_dark_rim(textured, monkeypatch):
    """A lacune whose mask leaves out its 1-voxel partial-volume rim: filled from the mask's own
    edge, the rim's darkness is carried inward; the ring test sees a ring darker than the tissue
    beyond it predicts and fills from one voxel further out."""
    tissue, brain = textured
    mask = _ball(tissue.shape, (16, 16, 16), 4)
    lacune = ndimage.binary_dilation(mask)  # the mask is one voxel short of it all round
    image = np.where(lacune & ~mask, 0.5 * tissue, tissue)
    image = np.where(mask, 0.15, image).astype(np.float32)
    error = np.abs(hole_fill(image, mask) - tissue)[mask].mean()
    monkeypatch.setattr(fill_module, "RIM_DARK_SHARE", 1.01)  # the ring never read as lesion
    from_edge = np.abs(hole_fill(image, mask) - tissue)[mask].mean()
    assert error < 0.03 and from_edge > 3 * error
    # With the whole lacune masked, the ring is healthy and the fill starts at the mask's edge.
    monkeypatch.undo()
    exact = hole_fill(image, lacune)
    monkeypatch.setattr(fill_module, "RIM_DARK_SHARE", 1.01)
    assert np.array_equal(exact, hole_fill(image, lacune))


def test_hole_fill_reads_neither_the_background_nor_the_other_lesions(textured):
    """A hole at the brain's edge is filled from the tissue, not pulled toward the zero
    background beyond it; a hole beside a lesion filled otherwise does not read that lesion."""
    tissue, brain = textured
    edge_hole = _ball(tissue.shape, (16, 16, 29), 3) & brain  # cut by the brain's surface
    hole = _ball(tissue.shape, (16, 8, 16), 2.5)
    infarct = _ball(tissue.shape, (16, 14, 16), 3.5) & ~hole
    image = np.where(edge_hole | hole | infarct, 0.1, tissue).astype(np.float32)
    out = hole_fill(image, edge_hole | hole, lesions=edge_hole | hole | infarct)
    for region in (edge_hole, hole):
        assert np.abs(out - tissue)[region].mean() < 0.03
    assert np.array_equal(out[~(edge_hole | hole)], image[~(edge_hole | hole)])


def test_a_lacunes_mask_drawn_1mm_too_large_keeps_the_local_fill(textured):
    """A 1.8 ml lacune (the class's largest, with its rim) read on the core of a mask 1 mm too
    large is as large as the lacune itself; it is still a hole that the tissue around it fills,
    not a lesion to graft (Colin 27 through the participant level: 14.8 dB against 17.2)."""
    tissue, brain = textured
    lacune = _ball(tissue.shape, (16, 16, 16), 7.5)
    image = np.where(lacune, 0.15, tissue).astype(np.float32)
    for mask in (lacune, dilate_mm(lacune, (1, 1, 1), 1.0) & brain):
        assert (auto_choice(image, mask)[mask] == AUTO_CODES["local"]).all()


def test_auto_chooses_each_lesions_fill_on_the_mask_as_given_and_fills_all_that_is_grown(textured):
    """A lacune with a wide partial-volume rim: grown over its rim, its core reads as a larger,
    paler lesion (the white-matter mean); read on the mask as given it is the small dark hole it
    is, and the local fill covers the whole grown mask."""
    tissue, brain = textured
    given = _ball(tissue.shape, (16, 16, 16), 4)
    grown = _ball(tissue.shape, (16, 16, 16), 7) & brain
    image = np.where(grown, tissue * 0.7, tissue)  # the rim: partial volume, paler than the hole
    image = np.where(given, 0.15, image).astype(np.float32)
    assert (auto_choice(image, grown)[grown] == AUTO_CODES["wm"]).all()  # read on the grown mask
    choice = auto_choice(image, grown, given=given)
    assert (choice[grown] == AUTO_CODES["local"]).all() and (choice[~grown] == 0).all()
    out = prefill(image, grown, "auto", given=given)
    assert np.allclose(out[grown], hole_fill(image, grown)[grown], atol=1e-5)
    assert np.array_equal(out[~grown], image[~grown])
    # Without a growth, given and mask are the same: the same choice as without ``given``.
    assert np.array_equal(auto_choice(image, given, given=given), auto_choice(image, given))


def test_given_dark_reads_only_a_csf_dark_lesion_on_the_mask_as_given(textured):
    """GIVEN_DARK_RATIO, the app's reading: the same grown lacune is read on its given core (the
    local fill); a WMH-like lesion (0.6 of its tissue as given) grown the same way is read on the
    grown component, as without ``given`` (the white-matter mean, which won on Colin 27's WMH)."""
    tissue, brain = textured
    given = _ball(tissue.shape, (16, 16, 16), 4)
    grown = _ball(tissue.shape, (16, 16, 16), 7) & brain
    rim = np.where(grown, tissue * 0.7, tissue)
    lacune = np.where(given, 0.15, rim).astype(np.float32)
    wmh = np.where(given, tissue * 0.6, rim).astype(np.float32)
    dark = auto_choice(lacune, grown, given=given, given_dark=GIVEN_DARK_RATIO)
    assert (dark[grown] == AUTO_CODES["local"]).all()
    pale = auto_choice(wmh, grown, given=given, given_dark=GIVEN_DARK_RATIO)
    assert np.array_equal(pale, auto_choice(wmh, grown))
    assert not np.array_equal(pale, auto_choice(wmh, grown, given=given))  # what reading all on given does


def test_grid_growth_only_for_a_coarser_mask(textured):
    _tissue, brain = textured
    mask = _ball(brain.shape, (16, 16, 16), 4)
    same, info = grow_by_grid(mask, (1, 1, 1), (1, 1, 1))
    assert np.array_equal(same, mask) and info["grown_mm"] == 0
    grown, info = grow_by_grid(mask, (1, 1, 1), (2, 2, 2), grid_factor=0.5, brain=brain)
    assert info["grown_mm"] == 1.0
    assert np.array_equal(grown, dilate_mm(mask, (1, 1, 1), 1.0) & brain)


def test_image_growth_takes_the_rim_and_not_a_dark_sulcus_beyond_it(textured):
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 5)
    core = _ball(tissue.shape, (16, 16, 16), 3.5)
    image = np.where(lesion, tissue * 0.55, tissue)  # the rim: as dark as the lesion...
    image = np.where(core, tissue * 0.3, image).astype(np.float32)  # ...the mask only its core
    sulcus = (np.indices(tissue.shape)[0] == 16) & (np.indices(tissue.shape)[1] > 24)  # dark, not touching
    image[sulcus & brain] = 0.2
    grown, info = grow_by_image(image, core, (1, 1, 1), reach_mm=2.0, brain=brain)
    rim = lesion & ~core
    assert (grown & rim).sum() >= 0.9 * rim.sum()
    assert not (grown & sulcus).any()
    assert not (grown & ~lesion).any()  # healthy tissue around is not taken
    assert info["added_voxels"] == int((grown & ~core).sum())


def test_seeded_image_growth_stops_at_a_too_large_masks_healthy_edge(textured):
    """A mask 1 mm too large ends in healthy tissue; a dark sulcus just beyond that edge touches
    the mask but not the lesion. The unseeded growth takes it in; the seeded one does not, and
    still takes the rim of a mask short of its lesion."""
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 4)
    image = np.where(lesion, tissue * 0.3, tissue).astype(np.float32)
    large = dilate_mm(lesion, (1, 1, 1), 1.0)
    sulcus = (np.indices(tissue.shape)[0] >= 16) & (np.abs(np.indices(tissue.shape)[1] - 16) <= 1)
    sulcus &= ~large & dilate_mm(large, (1, 1, 1), 3.0)  # touching the large mask's outer edge
    image[sulcus] = 0.1
    plain, _ = grow_by_image(image, large, (1, 1, 1), reach_mm=1.5, brain=brain)
    seeded, info = grow_by_image(image, large, (1, 1, 1), reach_mm=1.5, brain=brain, seeded=True)
    assert (plain & sulcus).any()  # what the seed guards against
    assert np.array_equal(seeded, large) and info["added_voxels"] == 0 and info["seeded"]
    short = ndimage.binary_erosion(lesion)
    grown, _ = grow_by_image(image, short, (1, 1, 1), reach_mm=1.5, brain=brain, seeded=True)
    assert (grown & lesion).sum() >= 0.95 * lesion.sum()


def test_the_edge_gate_keeps_a_covering_mask_and_grows_a_short_one(textured):
    """grow_mask's defaults: a component grows only when half its edge is still lesion. A mask
    1 mm too large beside grey-matter-dark tissue (0.65 of white matter, lesion-like to the
    growth's faint rule) stays as given; a mask 1 mm short of the same lesion takes its rim."""
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 4)
    image = np.where(lesion, tissue * 0.3, tissue).astype(np.float32)
    large = dilate_mm(lesion, (1, 1, 1), 1.0)
    grey = (np.indices(tissue.shape)[0] >= 16) & ~large & dilate_mm(large, (1, 1, 1), 3.0)
    image[grey] = tissue[grey] * 0.65
    ungated, _ = grow_mask(image, large, (1, 1, 1), method="image", min_edge_share=0.0)
    assert (ungated & grey).sum() > 50  # what the gate guards against
    kept, growth = grow_mask(image, large, (1, 1, 1), method="image", brain=brain)
    assert np.array_equal(kept, large)
    assert growth.steps[0]["covered_components"] == 1 and growth.steps[0]["added_voxels"] == 0
    short = ndimage.binary_erosion(lesion)
    grown, growth = grow_mask(image, short, (1, 1, 1), method="image", brain=brain)
    assert (grown & lesion).sum() >= 0.95 * lesion.sum() and growth.steps[0]["covered_components"] == 0


def test_grow_mask_records_what_it_did(textured):
    tissue, brain = textured
    mask = _ball(tissue.shape, (16, 16, 16), 3)
    image = np.where(mask, 0.3, tissue).astype(np.float32)
    grown, growth = grow_mask(image, mask, (1, 1, 1), method="auto", source_voxel_mm=(2, 2, 2), brain=brain)
    assert [s["step"] for s in growth.steps] == ["grid", "image", "dark"]
    assert growth.given_voxels == int(mask.sum()) and growth.healed_voxels == int(grown.sum())
    assert (grown & mask).sum() == mask.sum()
    none, growth = grow_mask(image, mask, (1, 1, 1), method="none")
    assert np.array_equal(none, mask) and growth.steps == []
    with pytest.raises(ValueError, match="unknown mask growth"):
        grow_mask(image, mask, (1, 1, 1), method="grab")
    assert ndimage.label(grown)[1] == 1


def test_rings_take_a_subtle_lesions_faint_rim_that_the_voxel_rule_misses(textured):
    """A subtle lesion (core 0.8 of its tissue) whose outer layer darkens by 6 %, less than
    healthy tissue varies: the voxel rule leaves a fifth of a 1 mm-short mask's rim behind; the
    rings, taken while their median is lesion-like, take all of it. The exact mask gains no ring
    (its first ring is healthy), nor does a CSF-dark lesion (its rim is found voxel by voxel)."""
    rng = np.random.default_rng(1)
    _, brain = textured
    tissue = (0.9 + rng.normal(0, 0.04, brain.shape)).astype(np.float32) * brain
    lesion = _ball(tissue.shape, (16, 16, 16), 5)
    short = ndimage.binary_erosion(lesion)
    image = tissue.copy()
    image[short] *= 0.8
    image[lesion & ~short] *= 0.94
    cover = lambda grown: (grown & lesion).sum() / lesion.sum()  # noqa: E731
    voxels, _ = grow_mask(image, short, (1, 1, 1), method="image", brain=brain, rings=False)
    ringed, growth = grow_mask(image, short, (1, 1, 1), method="image", brain=brain)  # rings: the default
    assert cover(voxels) < 0.9 and cover(ringed) == 1.0
    assert growth.steps[0]["rings"] and growth.steps[0]["ring_voxels"] > 0
    assert (ringed & ~lesion).sum() <= (voxels & ~lesion).sum() + 0.1 * lesion.sum()  # the rings stop at the lesion
    exact, growth = grow_by_image(image, lesion, (1, 1, 1), reach_mm=2.0, fraction=0.25, brain=brain, rings=True)
    assert growth["ring_voxels"] == 0
    dark = tissue.copy()
    dark[short] *= 0.3
    dark[lesion & ~short] *= 0.94
    _, growth = grow_by_image(dark, short, (1, 1, 1), reach_mm=2.0, fraction=0.25, brain=brain, rings=True)
    assert growth["ring_voxels"] == 0


def test_given_dark_reads_a_csf_dark_lesions_rim_on_the_mask_as_given(textured, monkeypatch):
    """A large CSF-dark lesion in grey matter (an infarct: the graft): a mask grown past the grey
    band reaches white matter, and read on the grown mask the lesion would get the white-matter
    mean; read as given (GIVEN_DARK_RATIO) it keeps its graft. (Its size is set to count as no
    lacune in this small scene.)"""
    monkeypatch.setattr("usb_model.fill.AUTO_LOCAL_ML", 1.0)
    tissue, brain = textured
    given = _ball(tissue.shape, (16, 16, 16), 8)  # 2.1 ml, its core 1.4 ml: no lacune
    grey = dilate_mm(given, (1, 1, 1), 2.0) & ~given
    image = np.where(grey, 0.6 * tissue, tissue)
    image = np.where(given, 0.15, image).astype(np.float32)
    grown = dilate_mm(given, (1, 1, 1), 3.0) & brain
    assert (auto_choice(image, given)[given] == AUTO_CODES["graft"]).all()
    assert (auto_choice(image, grown)[grown] == AUTO_CODES["wm"]).all()
    choice = auto_choice(image, grown, given=given, given_dark=GIVEN_DARK_RATIO)
    assert (choice[grown] == AUTO_CODES["graft"]).all()


def _lacune(textured):
    """A CSF-dark lacune (0.25 of its tissue) with a partial-volume rim (0.45) one voxel wide."""
    tissue, brain = textured
    core = _ball(tissue.shape, (16, 16, 16), 4)
    lesion = _ball(tissue.shape, (16, 16, 16), 5)
    image = np.where(lesion, tissue * 0.45, tissue)
    image = np.where(core, tissue * 0.25, image).astype(np.float32)
    return image, lesion, brain


def test_fit_dark_peels_a_too_large_masks_tissue_and_takes_a_short_masks_rim(textured):
    image, lesion, brain = _lacune(textured)
    large = dilate_mm(lesion, (1, 1, 1), 1.0)
    fitted, info = fit_dark(image, large, (1, 1, 1), brain=brain)
    assert info["components"] == 1 and info["peeled_voxels"] > 0
    assert (fitted & lesion).sum() == lesion.sum()  # the lesion and its rim stay
    assert (fitted & ~lesion).sum() <= 0.2 * (large & ~lesion).sum()  # most of the healthy layer goes
    # A mask 2 mm short: the image growth takes most of the rim, the rings the rest.
    short = _ball(image.shape, (16, 16, 16), 3)
    grown, _ = grow_mask(image, short, (1, 1, 1), brain=brain, dark=False)
    fitted, growth = grow_mask(image, short, (1, 1, 1), brain=brain)
    assert growth.steps[-1]["ring_voxels"] > 0
    assert (grown & lesion).sum() < 0.95 * lesion.sum() <= (fitted & lesion).sum()
    assert not (fitted & ~lesion).any()
    exact, info = fit_dark(image, lesion, (1, 1, 1), brain=brain)
    assert np.array_equal(exact, lesion) and info["peeled_voxels"] == info["ring_voxels"] == 0


def test_fit_dark_leaves_pale_lesions_alone_and_only_peels_large_ones(textured):
    tissue, brain = textured
    lesion = _ball(tissue.shape, (16, 16, 16), 4)
    large = dilate_mm(lesion, (1, 1, 1), 2.0)
    wmh = np.where(lesion, tissue * 0.7, tissue).astype(np.float32)  # not CSF-dark
    same, info = fit_dark(wmh, large, (1, 1, 1), brain=brain)
    assert np.array_equal(same, large) and info["components"] == 0
    image, _lesion, brain = _lacune(textured)
    # at 3 mm the same ball is 9 ml: an infarct
    same, info = fit_dark(image, large, (3, 3, 3), brain=brain)  # the default: left alone
    assert np.array_equal(same, large) and info["components"] == 0
    peeled, info = fit_dark(image, large, (3, 3, 3), brain=brain, peel_large=True)
    assert info["components"] == 1 and info["peeled_voxels"] > 0 and info["ring_voxels"] == 0
    assert not (peeled & ~large).any()


def _infarct():
    """A CSF-dark infarct (0.25 of its tissue, 4.2 ml) with a one-voxel partial-volume rim (0.5),
    in shaded, noisy white matter."""
    rng = np.random.default_rng(3)
    shape = (40, 40, 40)
    brain = _ball(shape, (20, 20, 20), 18)
    shading = 0.9 + 0.1 * (np.indices(shape)[0] / shape[0] - 0.5)
    tissue = (shading + rng.normal(0, 0.02, shape)).astype(np.float32) * brain
    lesion = _ball(shape, (20, 20, 20), 10)
    image = np.where(lesion, tissue * 0.5, tissue)
    image = np.where(_ball(shape, (20, 20, 20), 9), tissue * 0.25, image).astype(np.float32)
    return image, lesion, brain


def test_fit_dark_peels_a_large_lesions_too_large_mask_and_never_rings_it():
    """peel_large (a measured candidate, off by default): an infarct's mask drawn 1 mm too large
    loses its healthy layer, the lesion and its rim stay. A short mask is not ringed
    (grow_by_image takes a large lesion's rim)."""
    image, lesion, brain = _infarct()
    large = dilate_mm(lesion, (1, 1, 1), 1.0)
    fitted, info = fit_dark(image, large, (1, 1, 1), brain=brain, peel_large=True)
    assert info["components"] == 1 and info["peeled_voxels"] > 0
    assert (fitted & lesion).sum() == lesion.sum()
    assert (fitted & ~lesion).sum() <= 0.2 * (large & ~lesion).sum()
    kept, info = fit_dark(image, large, (1, 1, 1), brain=brain)  # the default
    assert np.array_equal(kept, large) and info["components"] == 0
    exact, info = fit_dark(image, lesion, (1, 1, 1), brain=brain, peel_large=True)
    assert np.array_equal(exact, lesion)
    short = _ball(image.shape, (20, 20, 20), 8)
    same, info = fit_dark(image, short, (1, 1, 1), brain=brain, peel_large=True)
    assert np.array_equal(same, short) and info["ring_voxels"] == 0


def test_a_fitted_mask_can_be_smaller_than_the_mask_given(textured):
    image, lesion, brain = _lacune(textured)
    large = dilate_mm(lesion, (1, 1, 1), 1.0)
    healed, growth = grow_mask(image, large, (1, 1, 1), method="auto", brain=brain)
    assert growth.healed_voxels < growth.given_voxels and growth.steps[-1]["step"] == "dark"
    kept, growth = grow_mask(image, large, (1, 1, 1), method="auto", brain=brain, dark=False)
    assert np.array_equal(kept, large)


def test_fit_dark_leaves_a_small_piece_of_a_large_lesion_alone():
    """A small dark piece of a large infarct's mask is not a lacune: its size is read on all the
    mask within DARK_CLUSTER_MM of it."""
    rng = np.random.default_rng(2)
    shape = (48, 48, 48)
    brain = _ball(shape, (24, 24, 24), 22)
    tissue = (0.9 + rng.normal(0, 0.02, shape)).astype(np.float32) * brain
    infarct = _ball(shape, (16, 24, 24), 10)  # 4.2 ml, its core 3 ml
    piece = _ball(shape, (31, 24, 24), 1.5)  # 2 mm beyond the infarct's mask: one lesion
    image = np.where(infarct | piece, tissue * 0.25, tissue).astype(np.float32)
    mask = infarct | dilate_mm(piece, (1, 1, 1), 1.0)  # the piece's mask a voxel too large
    alone, info = fit_dark(image, mask, (1, 1, 1), brain=brain, cluster_mm=0.0)
    assert info["components"] == 1 and not np.array_equal(alone, mask)  # read alone, it is fitted
    kept, info = fit_dark(image, mask, (1, 1, 1), brain=brain)
    assert info["components"] == 0 and np.array_equal(kept, mask)
    # Peeled as a piece of the infarct (peel_large): never ringed.
    peeled, info = fit_dark(image, mask, (1, 1, 1), brain=brain, peel_large=True)
    assert info["ring_voxels"] == 0 and not (peeled & ~mask).any()


def test_the_registration_leaves_out_the_mask_as_given_whatever_the_growth(tmp_path):
    """A growth or a peel must not move the registration that places an infarct's graft: it moved
    the heal by up to 1 dB on Colin 27's head, hiding what the growth itself did."""
    import nibabel as nib

    from bids_usb.workflows.participant import init_preprocess_wf

    anat = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), anat)
    mask = tmp_path / "sub-01_label-lesion_roi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), mask)
    wf = init_preprocess_wf(anat, lesion_mask=mask, mask_growth="auto")

    def source(node: str, field: str) -> str:
        """The node that feeds ``node``'s input ``field``."""
        return next(
            src.name
            for src, _dst, data in wf._graph.in_edges(wf.get_node(node), data=True)
            for _out, into in data["connect"]
            if into == field
        )

    assert source("register", "lesion_mask") == "prepare"
    assert source("to_model_grid", "lesion_mask") == "grow_mask"  # the model still heals the grown mask
