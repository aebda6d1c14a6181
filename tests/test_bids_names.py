"""One way to name derivatives: the BIDS schema's entity order, every source entity kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_usb.derivatives import DERIVATIVE_ENTITIES, bids_name, derivative_path, entity_order, short_names

BASE = {
    "subject": "01",
    "session": "a",
    "acquisition": "mprage",
    "run": 1,
    "suffix": "T1w",
    "extension": ".nii.gz",
    "datatype": "anat",
}
SOURCE = sorted(
    k
    for k, short in short_names().items()
    if short in entity_order() and short not in DERIVATIVE_ENTITIES and k != "subject"
)


@pytest.mark.parametrize("entity", SOURCE)
def test_inputs_differing_in_one_entity_never_share_an_output(entity):
    """Before, task-, chunk- and inv- were dropped, so two such inputs wrote the SAME file."""
    a = derivative_path(Path("/out"), {**BASE, entity: "1"}, "T1w", desc="healed")
    b = derivative_path(Path("/out"), {**BASE, entity: "2"}, "T1w", desc="healed")
    assert a != b


def test_the_schema_order_and_the_transform_entities():
    entities = {"subject": "01", "session": "a", "task": "rest", "acquisition": "mp", "run": 2, "inv": 2, "chunk": 1}
    assert (
        bids_name({**entities, "desc": "healed"}, "T1w", ".nii.gz")
        == "sub-01_ses-a_task-rest_acq-mp_run-2_inv-2_chunk-1_desc-healed_T1w.nii.gz"
    )
    xfm = derivative_path(
        Path("/o"), {"subject": "01", "run": 1}, "xfm", ".mat", **{"from": "T1w", "to": "MNI", "mode": "image"}
    )
    assert xfm.name == "sub-01_run-1_from-T1w_to-MNI_mode-image_xfm.mat"
    space = derivative_path(
        Path("/o"), {"subject": "01", "space": "orig"}, "mask", space="MNI", resolution="6mm", desc="brain"
    )
    assert space.name == "sub-01_space-MNI_res-6mm_desc-brain_mask.nii.gz"


def test_an_unknown_entity_is_an_error_not_a_silent_drop():
    with pytest.raises(ValueError, match="no BIDS entity"):
        bids_name({"subject": "01", "colour": "red"}, "T1w", ".nii.gz")


def _context(tmp_path, task, **extra):
    """One image's output context: sub-01's T1w under ``tmp_path``."""
    from bids_usb.outputs import ImageContext

    return ImageContext(
        output_dir=tmp_path,
        bids_dir=tmp_path,
        anat=tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
        entities={"subject": "01"},
        suffix="T1w",
        task=task,
        res_label="3",
        **extra,
    )


def test_every_output_role_has_its_own_file(tmp_path):
    """One sink per output: no two roles of one image may write the same path."""
    from bids_usb.outputs import OUTPUTS, output_path, sidecar

    for task in ("heal", "embed"):
        ctx = _context(tmp_path, task)
        paths = [output_path(role, ctx) for role in OUTPUTS]
        assert len(set(paths)) == len(paths), paths
        assert all(p.is_relative_to(tmp_path / "sub-01" / "anat") for p in paths)
        for role in OUTPUTS:
            if role != "transform":
                assert sidecar(role, ctx)["Sources"][0] == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"


def test_the_lesion_sidecar_says_whether_the_mask_was_grown_or_fitted(tmp_path):
    """A CSF-dark lesion's mask can end smaller than given (mask_growth.fit_dark): its sidecar
    must not call that growth."""
    from bids_usb.outputs import sidecar

    def description(healed, given, changed):
        growth = {"healed_voxels": healed, "given_voxels": given, "healed_ml": healed / 1000, "given_ml": given / 1000}
        ctx = _context(tmp_path, "heal", growth={**growth, "changed": changed})
        return sidecar("lesion", ctx)["Description"]

    assert "grown to 1.50 ml" in description(1500, 1000, True)
    assert "fitted to 0.80 ml" in description(800, 1000, True)
    assert "unchanged" in description(1000, 1000, False)
    assert "fitted to 1.00 ml" in description(1000, 1000, True)  # as many voxels, not the same ones
