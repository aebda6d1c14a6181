"""The BIDS validator wrapper: runs bids-validator-deno offline and reads errors vs warnings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_usb import validation
from bids_usb.discovery import RAW_MASK_GLOBS
from bids_usb.errors import UsageError, ValidationFailed
from bids_usb.validation import (
    ValidatorUnavailable,
    assert_valid_bids,
    find_validator,
    run_bids_validator,
    validate_or_raise,
    validator_config,
)

pytestmark = pytest.mark.skipif(find_validator() is None, reason="bids-validator-deno not installed")


def _nii(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((8, 8, 8), np.uint8)
    data[2:6, 2:6, 2:6] = 1
    img = nb.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm")
    nb.save(img, str(path))
    return path


def _json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def _raw(root: Path) -> Path:
    _json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.10.0"})
    _nii(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _nii(root / "sub-02" / "ses-a" / "anat" / "sub-02_ses-a_run-1_T1w.nii.gz")
    return root


def _derivative(root: Path) -> Path:
    _json(
        root / "dataset_description.json",
        {
            "Name": "bids_usb",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "bids_usb", "Version": "0.1.0"}],
        },
    )
    anat = root / "sub-01" / "anat"
    _nii(anat / "sub-01_desc-healed_T1w.nii.gz")
    _json(anat / "sub-01_desc-healed_T1w.json", {"SkullStripped": False})
    _nii(anat / "sub-01_label-lesion_mask.nii.gz")
    _json(anat / "sub-01_label-lesion_mask.json", {"Type": "Lesion"})
    return root


def test_finds_the_script_next_to_python():
    exe = find_validator()
    assert Path(exe).name == "bids-validator-deno"
    if (Path(sys.executable).parent / "bids-validator-deno").exists():
        assert Path(exe).parent == Path(sys.executable).parent


def test_valid_tiny_dataset(tmp_path):
    root = _raw(tmp_path / "raw")
    report = run_bids_validator(root)
    assert report.ok and report.returncode == 0 and report.errors == []
    assert report.warnings == []  # --ignoreWarnings
    assert report.command[1:4] == ["--format", "json", "--ignoreWarnings"]
    assert sorted(report.summary["subjects"]) == ["01", "02"]
    assert assert_valid_bids(root) == []
    assert validate_or_raise(root).ok
    # A missing README is only a warning.
    full = run_bids_validator(root, ignore_warnings=False)
    assert full.ok and "README_FILE_MISSING" in {w.code for w in full.warnings}


def test_broken_dataset(tmp_path):
    root = _raw(tmp_path / "raw")
    (root / "dataset_description.json").unlink()
    _nii(root / "sub-01" / "anat" / "sub-01_mprage.nii.gz")
    report = run_bids_validator(root)
    assert not report.ok and report.returncode == 16
    found = {(e.code, e.location) for e in report.errors}
    assert ("MISSING_DATASET_DESCRIPTION", "/dataset_description.json") in found
    assert ("NOT_INCLUDED", "/sub-01/anat/sub-01_mprage.nii.gz") in found
    with pytest.raises(ValidationFailed) as info:
        validate_or_raise(root)
    msg = str(info.value)
    assert info.value.exit_code == 16 and "\n" not in msg
    assert "NOT_INCLUDED (/sub-01/anat/sub-01_mprage.nii.gz)" in msg
    assert "MISSING_DATASET_DESCRIPTION" in msg and "--skip-bids-validation" in msg
    errors = assert_valid_bids(root)
    assert "NOT_INCLUDED /sub-01/anat/sub-01_mprage.nii.gz" in errors
    assert assert_valid_bids(root, ignore_codes=["NOT_INCLUDED", "MISSING_DATASET_DESCRIPTION"]) == []


def test_lesion_roi_needs_bidsignore(tmp_path):
    # fMRIPrep's lesion convention is not BIDS: users list it in .bidsignore.
    root = _raw(tmp_path / "raw")
    _nii(root / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz")
    assert assert_valid_bids(root) == ["NOT_INCLUDED /sub-01/anat/sub-01_label-lesion_roi.nii.gz"]
    (root / ".bidsignore").write_text("*_roi.nii.gz\n")
    assert assert_valid_bids(root) == []


def test_the_apps_raw_masks_are_expected_without_a_bidsignore(tmp_path):
    """The app's own raw lesion-mask names are passed as expected files: NOT_INCLUDED is ignored
    for them (a --config in a temporary folder, nothing written into the dataset), and only for
    them and only that code."""
    root = _raw(tmp_path / "raw")
    anat = root / "sub-02" / "ses-a" / "anat"
    _nii(root / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz")
    _json(root / "sub-01" / "anat" / "sub-01_label-lesion_roi.json", {"Type": "Lesion"})
    _nii(anat / "sub-02_ses-a_run-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")
    _nii(root / "sub-01" / "anat" / "sub-01_mprage.nii.gz")  # not a mask: still an error
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    report = run_bids_validator(root, expected=RAW_MASK_GLOBS)
    assert [str(e) for e in report.errors] == ["NOT_INCLUDED /sub-01/anat/sub-01_mprage.nii.gz"]
    assert "--config" in report.command and not Path(report.command[report.command.index("--config") + 1]).exists()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert len(run_bids_validator(root).errors) == 4  # without them: every mask and the sidecar
    with pytest.raises(ValidationFailed, match="sub-01_mprage"):
        validate_or_raise(root, expected=RAW_MASK_GLOBS)
    assert validator_config(["sub-*/**/anat/*_roi.nii.gz"]) == {
        "ignore": [{"code": "NOT_INCLUDED", "location": "sub-*/**/anat/*_roi.nii.gz"}]
    }


def test_derivative_dataset_uses_derivative_rules(tmp_path):
    root = _derivative(tmp_path / "deriv")
    assert assert_valid_bids(root) == []
    # SkullStripped is REQUIRED for derivative images.
    (root / "sub-01" / "anat" / "sub-01_desc-healed_T1w.json").write_text("{}")
    assert assert_valid_bids(root) == ["SIDECAR_KEY_REQUIRED[SkullStripped] /sub-01/anat/sub-01_desc-healed_T1w.nii.gz"]
    # Without DatasetType, GeneratedBy alone is enough for the derivative rules ...
    desc = json.loads((root / "dataset_description.json").read_text())
    del desc["DatasetType"]
    (root / "dataset_description.json").write_text(json.dumps(desc))
    assert [e.split()[0] for e in assert_valid_bids(root)] == ["SIDECAR_KEY_REQUIRED[SkullStripped]"]
    # ... but the same files in a dataset that says it is raw are errors.
    desc["DatasetType"] = "raw"
    (root / "dataset_description.json").write_text(json.dumps(desc))
    errors = assert_valid_bids(root)
    assert "NOT_INCLUDED /sub-01/anat/sub-01_label-lesion_mask.nii.gz" in errors
    assert "ENTITY_NOT_IN_RULE /sub-01/anat/sub-01_desc-healed_T1w.nii.gz" in errors


def test_recursive_into_derivatives(tmp_path):
    root = _raw(tmp_path / "raw")
    deriv = _derivative(root / "derivatives" / "bids_usb")
    _nii(deriv / "sub-01" / "anat" / "sub-01_junk.nii.gz")
    assert assert_valid_bids(root) == []  # derivatives/ is skipped without -r
    report = run_bids_validator(root, recursive=True)
    assert "--recursive" in report.command
    (issue,) = report.errors
    assert issue.code == "NOT_INCLUDED" and issue.dataset == "derivatives/bids_usb"
    assert issue.where == "derivatives/bids_usb/sub-01/anat/sub-01_junk.nii.gz"


def test_not_a_directory(tmp_path):
    with pytest.raises(UsageError):
        run_bids_validator(tmp_path / "nowhere")


def test_validator_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "find_validator", lambda: None)
    with pytest.raises(ValidatorUnavailable, match="--skip-bids-validation"):
        run_bids_validator(_raw(tmp_path / "raw"))


def test_validator_crash_or_garbage(tmp_path, monkeypatch):
    root = _raw(tmp_path / "raw")
    fake = tmp_path / "fake-validator"
    fake.write_text("#!/bin/sh\necho 'boom: something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(validation, "find_validator", lambda: str(fake))
    with pytest.raises(ValidatorUnavailable, match="exit 3.*boom"):
        run_bids_validator(root)
    fake.write_text("#!/bin/sh\necho 'not json'\nexit 0\n")
    with pytest.raises(ValidatorUnavailable, match="no JSON"):
        run_bids_validator(root)


def test_unwritable_deno_cache_uses_a_temp_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DENO_DIR", raising=False)
    monkeypatch.setattr(validation, "_writable", lambda path: False)
    assert run_bids_validator(_raw(tmp_path / "raw")).ok
