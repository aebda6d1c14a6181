"""usb-synth-dataset: a valid BIDS dataset, reproducible, native grids, careful with files."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from usb_model.synth.bids_writer import DERIVATIVES_NAME, VISIBLE_CHANGE, main, plan_participants, write_dataset

ARGS = ["--participants", "4", "--seed", "0", "--voxel-size", "6", "--lesion-size", "medium"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bids"
    result = CliRunner().invoke(main, [str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _validator() -> str:
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        venv_exe = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "bids-validator-deno"
        exe = str(venv_exe) if venv_exe.exists() else None
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    return exe


def test_layout(dataset):
    tsv = (dataset / "participants.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:2] == ["participant_id", "lesion"]
    rows = [dict(zip(tsv[0].split("\t"), line.split("\t"))) for line in tsv[1:]]
    assert len(rows) == 4
    assert sum(r["lesion"] == "no" for r in rows) == 1  # 25% healthy by default
    deriv = dataset / "derivatives" / DERIVATIVES_NAME
    for r in rows:
        sub = r["participant_id"]
        anat = dataset / sub / "anat"
        assert (anat / f"{sub}_T1w.nii.gz").is_file()
        assert (anat / f"{sub}_label-lesion_roi.nii.gz").is_file() == (r["lesion"] == "yes")
        assert (deriv / sub / "anat" / f"{sub}_desc-healthy_T1w.nii.gz").is_file()
        assert (deriv / sub / "anat" / f"{sub}_desc-lesion_mask.nii.gz").is_file() == (r["lesion"] == "yes")
        if r["lesion"] == "yes":
            meta = json.loads((deriv / sub / "anat" / f"{sub}_desc-lesion_mask.json").read_text())
            assert meta["Type"] == "Lesion"
    assert "_roi.nii.gz" in (dataset / ".bidsignore").read_text()
    assert "skull-stripped" in (dataset / "README.md").read_text()
    assert json.loads((anat / f"{sub}_T1w.json").read_text())["SkullStripped"] is True
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "usb-synth-dataset"
    assert not list(dataset.rglob("*.tmp"))


def test_native_grids_vary(dataset):
    codes, zooms, oblique = [], [], []
    for sub in sorted(p.name for p in dataset.glob("sub-*")):
        img = nib.load(dataset / sub / "anat" / f"{sub}_T1w.nii.gz")
        codes.append("".join(nib.aff2axcodes(img.affine)))
        zooms.append(tuple(float(z) for z in img.header.get_zooms()))
        rot = img.affine[:3, :3] / np.asarray(img.header.get_zooms())
        oblique.append(not np.allclose(np.abs(rot), np.round(np.abs(rot)), atol=1e-3))
        assert img.get_data_dtype() == np.int16
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert codes[:3] == ["RAS", "LPS", "PIR"]
    assert zooms[2] == (6.0, 6.0, 18.0)  # thick slices
    assert oblique == [False, False, False, True]


def test_masks_images_and_ground_truth_agree(dataset):
    deriv = dataset / "derivatives" / DERIVATIVES_NAME
    for roi in sorted(dataset.glob("sub-*/anat/*_label-lesion_roi.nii.gz")):
        sub = roi.name.split("_")[0]
        image = nib.load(dataset / sub / "anat" / f"{sub}_T1w.nii.gz")
        lesion = np.asarray(nib.load(roi).dataobj) > 0
        healthy = nib.load(deriv / sub / "anat" / f"{sub}_desc-healthy_T1w.nii.gz")
        brain = np.asarray(nib.load(deriv / sub / "anat" / f"{sub}_desc-brain_mask.nii.gz").dataobj) > 0
        np.testing.assert_allclose(nib.load(roi).affine, image.affine)
        np.testing.assert_allclose(healthy.affine, image.affine)
        a, h = np.asarray(image.dataobj).astype(int), np.asarray(healthy.dataobj).astype(int)
        assert lesion.any() and not np.any(lesion & ~brain)
        assert np.all(a[~brain] == 0) and np.all(h[~brain] == 0)  # skull-stripped look
        # T1w lesions are dark; outside the mask, the lesion changed no voxel visibly (partial
        # volume: < 5% of the intensity range), and a few voxels away not at all.
        assert a[lesion].mean() < 0.9 * h[lesion].mean() and np.mean(a[lesion] < h[lesion]) > 0.9
        scale = json.loads((deriv / sub / "anat" / f"{sub}_desc-healthy_T1w.json").read_text())["IntensityScale"]
        assert np.all(np.abs(a - h)[~lesion] <= VISIBLE_CHANGE * scale + 1)
        far = ~ndimage.binary_dilation(lesion, np.ones((3, 3, 3), bool), iterations=4)
        assert np.abs(a - h)[far].max() <= 2
    healthy_subs = [p for p in dataset.glob("sub-*") if not list(p.glob("anat/*_roi.nii.gz"))]
    for sub_dir in healthy_subs:
        sub = sub_dir.name
        raw = np.asarray(nib.load(sub_dir / "anat" / f"{sub}_T1w.nii.gz").dataobj)
        gt = np.asarray(nib.load(deriv / sub / "anat" / f"{sub}_desc-healthy_T1w.nii.gz").dataobj)
        assert np.array_equal(raw, gt)


def test_same_seed_same_bytes(dataset, tmp_path):
    again = tmp_path / "again"
    write_dataset(again, participants=4, seed=0, voxel_size=(6.0,), lesion_size="medium")
    assert _digest(again) == _digest(dataset)
    other = tmp_path / "other"
    write_dataset(other, participants=1, seed=1, voxel_size=(6.0,), lesion_size="medium")
    assert _digest(other)["sub-01/anat/sub-01_T1w.nii.gz"] != _digest(dataset)["sub-01/anat/sub-01_T1w.nii.gz"]


def test_bids_validator_passes(dataset):
    exe = _validator()
    proc = subprocess.run([exe, "--format", "json", "-r", str(dataset)], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    issues = list(report["issues"]["issues"])
    for sub in report.get("derivativesSummary", {}).values():
        issues += sub["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert not errors, json.dumps(errors, indent=1)[:3000]
    assert proc.returncode == 0
    assert "/derivatives/usb-synth/" in report.get("derivativesSummary", {})


def test_refuses_non_empty_output_unless_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()
    args = [str(out), "--participants", "1", "--voxel-size", "6", "--n-healthy", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 73 and "not empty" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = runner.invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (out / "sub-01" / "anat" / "sub-01_T1w.nii.gz").is_file()
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone


def test_overwrite_replaces_an_earlier_run(tmp_path):
    out = tmp_path / "ds"
    write_dataset(out, participants=2, seed=0, voxel_size=(6.0,), n_healthy=2, variety=False)
    write_dataset(out, participants=1, seed=0, voxel_size=(6.0,), n_healthy=1, variety=False, overwrite=True)
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-01"]
    assert sorted(p.name for p in (out / "derivatives" / DERIVATIVES_NAME).glob("sub-*")) == ["sub-01"]


def test_flair_and_options(tmp_path):
    out = tmp_path / "flair"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            str(out),
            "--participants",
            "2",
            "--n-healthy",
            "0",
            "--voxel-size",
            "6,6,7",
            "--contrast",
            "FLAIR",
            "--no-variety",
            "--lesion-size",
            "5,20",
            "--grid",
            "30,36,30",
        ],
    )
    assert result.exit_code == 0, result.output
    img = nib.load(out / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz")
    assert img.shape == (30, 36, 30) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert tuple(float(z) for z in img.header.get_zooms()) == (6.0, 6.0, 7.0)
    lesion = np.asarray(nib.load(out / "sub-02" / "anat" / "sub-02_label-lesion_roi.nii.gz").dataobj) > 0
    gt = nib.load(out / "derivatives" / DERIVATIVES_NAME / "sub-02" / "anat" / "sub-02_desc-healthy_FLAIR.nii.gz")
    assert np.asarray(img.dataobj)[lesion].mean() > np.asarray(gt.dataobj)[lesion].mean()  # bright lesion
    bad = runner.invoke(main, [str(tmp_path / "x"), "--lesion-size", "gigantic"])
    assert bad.exit_code == 2
    bad = runner.invoke(main, [str(tmp_path / "y"), "--participants", "2", "--n-healthy", "3"])
    assert bad.exit_code == 2


def test_plan_participants():
    plan = plan_participants(6, 2, (1.0, 1.0, 1.0), seed=0)
    assert [p.label for p in plan] == ["01", "02", "03", "04", "05", "06"]
    assert sum(not p.lesion for p in plan) == 2
    assert [p.orientation for p in plan] == ["RAS", "LPS", "PIR", "LAS", "RAS", "LPS"]
    assert plan == plan_participants(6, 2, (1.0, 1.0, 1.0), seed=0)
    with pytest.raises(ValueError):
        plan_participants(2, 3, (1.0, 1.0, 1.0), seed=0)
