"""Autoencoder passes limited to the edit region (usb_model.passes, USB.heal's edit path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usb_model.costs import CostLog
from usb_model.networks import USBNetworks
from usb_model.passes import Box, GroupNormStatistics, decode_box, encode_box, max_pass_voxels, tiles
from usb_model.tasks import USB

GRID = 80  # a box and the untrained decoder's reach (6 latent voxels, 24 voxels) inside the grid
MARGIN = 6


@pytest.fixture(scope="module")
def cfg():
    from usb_model.config import load_preset

    return load_preset("tiny").replace(grid={"shape": (GRID,) * 3, "voxel_size": (4.0,) * 3})


@pytest.fixture(scope="module")
def networks(cfg):
    torch.manual_seed(0)
    return USBNetworks(cfg).eval()


@pytest.fixture(scope="module")
def brain():
    z, y, x = np.mgrid[:GRID, :GRID, :GRID]
    r = np.sqrt((z - 40) ** 2 + (y - 40) ** 2 + (x - 40) ** 2)
    img = np.where(r < 34, 0.5 + 0.3 * np.cos(z / 3.0) * np.sin(x / 4.0), 0.0)
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def lesion():
    m = np.zeros((GRID,) * 3, np.float32)
    m[36:43, 38:44, 34:41] = 1
    return m


def test_tiles_partition_the_box_and_fit_the_budget():
    shape = (48, 48, 48)
    box = Box((4, 8, 0), (40, 44, 28))
    for budget in (10**9, 20**3 * 4, 16**3):
        parts = tiles(box, 4, budget, 8, shape)
        covered = np.zeros(shape, int)
        for core in parts:
            covered[core.slices] += 1
            assert all(a % 4 == 0 for a in core.start)
        inside = np.zeros(shape, bool)
        inside[box.slices] = True
        assert (covered[inside] == 1).all() and (covered[~inside] == 0).all()
        if budget > 16**3:
            assert all(core.grow(8, shape).snap(4, shape).voxels <= budget for core in parts)
        else:  # cores are not cut thinner than the margin: the work stays bounded
            assert len(parts) <= np.prod([-(-s // 8) for s in box.shape])
    assert len(tiles(box, 4, 10**9, 8, shape)) == 1
    assert len(tiles(box, 4, 20**3 * 4, 8, shape)) > 1


def test_max_pass_voxels_grows_with_memory():
    small, large = max_pass_voxels(64, 4.0), max_pass_voxels(64, 16.0)
    assert 16**3 <= small < large
    assert max_pass_voxels(64, 16.0, weights_gb=1.0) < large


def test_frozen_statistics_of_the_same_volume_are_the_plain_pass(networks, brain):
    ae = networks.autoencoder
    x = torch.from_numpy(brain)[None, None]
    stats = GroupNormStatistics()
    with torch.no_grad():
        plain = networks.encode(x)
        with stats.record(ae):
            recorded = networks.encode(x)
        with stats.frozen(ae):
            frozen = networks.encode(x)
    assert torch.equal(plain, recorded)
    assert (frozen - plain).abs().max() < 1e-4
    assert not any("forward" in vars(m) for m in ae.modules())  # the hooks are gone


def test_cropped_decode_with_the_whole_grid_statistics_matches_inside_the_box(networks, brain):
    """A crop decoded with its own statistics is far off; with the whole pass's it is close."""
    ae = networks.autoencoder
    shape = (GRID,) * 3
    with torch.no_grad():
        z = networks.encode(torch.from_numpy(brain)[None, None])
        stats = GroupNormStatistics()
        with stats.record(ae):
            full = networks.decode(z)
        box = Box((32, 32, 32), (48, 48, 48))
        m = 4 * MARGIN
        own = decode_box(networks.decode, z, box, factor=4, margin=m, max_voxels=10**9, shape=shape)
        with stats.frozen(ae):
            crop = decode_box(networks.decode, z, box, factor=4, margin=m, max_voxels=10**9, shape=shape)
            tiled = decode_box(networks.decode, z, box, factor=4, margin=m, max_voxels=36**3, shape=shape)
            whole = decode_box(networks.decode, z, Box.whole(shape), factor=4, margin=m, max_voxels=10**9, shape=shape)
        ref = full[(..., *box.slices)]
        assert (own - ref).abs().mean() > 3 * (crop - ref).abs().mean()
        assert (crop - ref).abs().max() < 0.02 and (crop - ref).abs().mean() < 0.002
        assert (tiled - ref).abs().max() < 0.02
        assert (whole - full).abs().max() < 1e-4  # the whole grid in one pass: the full decode
        zc = encode_box(
            networks.encode, torch.from_numpy(brain)[None, None], box, factor=4, margin=m, max_voxels=10**9, shape=shape
        )
        assert zc.shape[-3:] == (4, 4, 4)


def _heal(networks, brain, lesion, passes, margin=MARGIN, **kw):
    costs = CostLog()
    usb = USB(networks, device="cpu", costs=costs, ae_margin=margin, **kw)
    return usb.heal(brain, lesion, stride=50, composite=False, ae_passes=passes), costs


def test_edit_passes_cover_the_edit_box_and_match_the_full_path(networks, brain, lesion):
    full, full_costs = _heal(networks, brain, lesion, "full")
    edit, edit_costs = _heal(networks, brain, lesion, "edit")
    assert full.params["ae_passes"] == "full" and edit.params["ae_passes"] == "edit"
    kinds = [(p["kind"], p["region"], p["batch"]) for p in full_costs.passes]
    assert kinds == [("encode", "full", 1), ("decode", "full", 1), ("encode", "full", 1)] + [("decode", "full", 1)] * 2
    kinds = [(p["kind"], p["region"], p["batch"]) for p in edit_costs.passes]
    # the fill's pair is encoded over the lesion grown twice by the reach (here the whole grid)
    assert kinds[1][0::2] == ("encode", 2)
    del kinds[1]
    # the samples' box with the input's (batch 2: the change is the difference of one pass), the fill's
    assert kinds == [("encode", "full", 1), ("decode", "full", 1), ("decode", "box", 2), ("decode", "box", 1)]
    decoded = [sum(p["voxels"] for p in c.passes if p["kind"] == "decode") for c in (edit_costs, full_costs)]
    assert decoded[0] < 0.9 * decoded[1]  # on this small grid the box is most of it
    inside = lesion > 0
    from usb_model.composite import blend_weight

    region = blend_weight(inside, (4.0,) * 3, 0.0, 8.0) > 0
    assert (edit.healed - full.healed).abs().numpy()[inside].max() < 0.02
    # The change (decode(healed) - decode(input)) is decoded with the input's statistics: on this
    # untrained model the healed latent is far from the input's (0.3 apart on average in the
    # region), so it is not bounded here; the demo model's figures are in docs/benchmarks.md.
    assert torch.isfinite(edit.change).all() and region.any()
    assert (edit.fill_change - full.fill_change).abs().numpy()[inside].max() < 0.02
    # outside the decoded box nothing changes: the input itself
    far = np.zeros_like(inside)
    far[:4] = True
    assert (edit.change.numpy()[far] == 0).all() and np.array_equal(edit.healed.numpy()[far], brain[far])
    assert {s["stage"] for s in edit_costs.stages} >= {"encode input", "encode fill", "sampling", "decode samples"}


def test_a_bf16_statistics_pass_moves_the_edit_path_little(networks, brain, lesion, monkeypatch):
    """The whole-grid decode that only gives the boxes their statistics may run in bf16 where the
    CPU has it natively; the statistics are kept in float32 and every output voxel comes from a
    float32 box pass, so the result stays within bf16's rounding of the statistics."""
    import usb_model.device as device
    from usb_model.passes import GroupNormStatistics

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    bf16, _ = _heal(networks, brain, lesion, "edit")
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    fp32, _ = _heal(networks, brain, lesion, "edit")
    inside = lesion > 0
    assert (bf16.healed - fp32.healed).abs().numpy()[inside].max() < 0.01
    assert (bf16.fill_change - fp32.fill_change).abs().numpy()[inside].max() < 0.01
    stats = GroupNormStatistics()
    with torch.no_grad(), stats.record(networks.autoencoder), torch.autocast("cpu", dtype=torch.bfloat16):
        networks.decode(torch.zeros(1, *networks.cfg.latent_shape))
    assert stats.stats and all(m.dtype == v.dtype == torch.float32 for m, v in stats.stats.values())


def test_acg_mode_passes_over_the_whole_grid(networks, brain, lesion):
    result, costs = _heal(networks, brain, None, "edit", mem_gb=8.0)
    assert result.params["ae_passes"] == "full"
    assert {p["region"] for p in costs.passes} == {"full"}


def test_the_memory_bound_cuts_the_box_into_tiles(networks, brain, lesion, monkeypatch):
    roomy, roomy_costs = _heal(networks, brain, lesion, "edit", margin=2, mem_gb=64.0)
    # a budget of 20k voxels a pass (what max_pass_voxels gives for some --mem): the decoded box,
    # 32^3 with its margin of 8 voxels, is cut into tiles
    monkeypatch.setattr("usb_model.tasks.max_pass_voxels", lambda *a, **k: 20_000)
    tight, tight_costs = _heal(networks, brain, lesion, "edit", margin=2, mem_gb=1.0)
    box_passes = [p for p in tight_costs.passes if p["region"] == "box" and p["kind"] == "decode"]
    assert box_passes and all(p["tiles"] > 1 for p in box_passes)
    assert all(p["tiles"] == 1 for p in roomy_costs.passes)
    inside = lesion > 0
    assert (tight.fill_change - roomy.fill_change).abs().numpy()[inside].max() < 0.03


def test_an_unknown_passes_choice_is_refused(networks, brain, lesion):
    with pytest.raises(ValueError, match="ae_passes"):
        USB(networks, device="cpu").heal(brain, lesion, ae_passes="some")


def test_a_whole_grid_decode_beyond_the_budget_runs_lean_with_the_same_result(networks, brain, lesion, monkeypatch):
    """The full path under a budget too small for a plain whole-grid decode: every decode runs
    one block at a time (usb_model.lean) and the outputs are those of the plain decodes."""
    roomy, roomy_costs = _heal(networks, brain, lesion, "full", mem_gb=64.0)
    monkeypatch.setattr("usb_model.tasks.max_pass_voxels", lambda *a, **k: 20_000)
    tight, tight_costs = _heal(networks, brain, lesion, "full", mem_gb=1.0)
    assert {p["region"] for p in roomy_costs.passes} == {"full"}
    decodes = [p["region"] for p in tight_costs.passes if p["kind"] == "decode"]
    assert decodes and set(decodes) == {"full, lean"}
    for name in ("healed", "change", "fill_change"):
        torch.testing.assert_close(getattr(tight, name), getattr(roomy, name), rtol=0, atol=1e-4)
