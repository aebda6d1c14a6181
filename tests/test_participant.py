"""The participant level end to end, on a small synthetic dataset, with an untrained tiny model.

One run covers four grids (RAS, LPS, PIR at 1 x 1 x 5 mm, oblique LAS) and a participant with
no T1w: outputs must exist, validate, lie on each input's exact grid and equal the input, bit
for bit, outside the edit region.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_usb.cli import main
from bids_usb.validation import assert_valid_bids
from usb_model.synth.bids_writer import write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bids = root / "bids"
    write_dataset(bids, participants=4, seed=3, n_healthy=0, voxel_size=(1.0, 1.0, 5.0 / 3.0))
    # A participant with a FLAIR only: a T1w model has nothing to do for it (exit 66, others run).
    flair = bids / "sub-05" / "anat"
    flair.mkdir(parents=True)
    shutil.copy(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz", flair / "sub-05_FLAIR.nii.gz")
    participants = (bids / "participants.tsv").read_text().rstrip("\n").split("\n")
    columns = participants[0].split("\t")
    participants.append("\t".join(["sub-05"] + ["n/a"] * (len(columns) - 1)))
    (bids / "participants.tsv").write_text("\n".join(participants) + "\n")
    return bids


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(dataset, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "usb"
    work = out.parent / "work"
    before = _snapshot(dataset)
    cmd = [
        sys.executable,
        "-m",
        "bids_usb",
        str(dataset),
        str(out),
        "participant",
        "--model",
        str(tiny_checkpoint),
        "-w",
        str(work),
        "--steps",
        "3",
        "--n-samples",
        "2",
        "--nprocs",
        "2",
        "--omp-nthreads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    return {"proc": proc, "out": out, "work": work, "cmd": cmd, "env": env, "before": before}


def test_exit_code_and_missing_participant(run):
    proc = run["proc"]
    assert proc.returncode == 66, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sub-05" in proc.stdout + proc.stderr
    assert str(run["out"] / "sub-01.html") in proc.stdout


def test_stdout_is_report_paths_and_stderr_shows_progress(run):
    """``bids_usb ... 2>/dev/null`` prints only report paths; progress is on stderr by default."""
    proc = run["proc"]
    lines = proc.stdout.split()
    assert lines and all(line.endswith(".html") for line in lines), proc.stdout[-2000:]
    assert "bids_usb.progress" in proc.stderr and "usb done" in proc.stderr  # a line per finished node
    assert "sub-05" in proc.stderr.splitlines()[-1]  # the failure's one line is the last


def test_nothing_is_written_into_the_input(run, dataset):
    assert _snapshot(dataset) == run["before"]


def test_outputs_lie_on_the_input_grid_and_keep_the_outside(run, dataset):
    out = run["out"]
    for sub in ("01", "02", "03", "04"):
        anat = out / f"sub-{sub}" / "anat"
        source = nib.load(dataset / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        healed = nib.load(anat / f"sub-{sub}_desc-healed_T1w.nii.gz")
        region = np.asanyarray(nib.load(anat / f"sub-{sub}_desc-editregion_mask.nii.gz").dataobj) > 0
        assert healed.shape == source.shape
        assert np.allclose(healed.affine, source.affine)
        assert healed.get_data_dtype() == source.get_data_dtype()
        a, b = np.asanyarray(healed.dataobj), np.asanyarray(source.dataobj)
        assert region.any() and not region.all()
        assert np.array_equal(a[~region], b[~region])
        for suffix in ("desc-lesion_mask", "desc-brain_mask", "desc-preproc_T1w", "desc-uncertainty_T1w"):
            img = nib.load(anat / f"sub-{sub}_{suffix}.nii.gz")
            assert img.shape == source.shape and np.allclose(img.affine, source.affine)
        sidecar = json.loads((anat / f"sub-{sub}_desc-healed_T1w.json").read_text())
        assert sidecar["SkullStripped"] is False
        assert sidecar["Sources"][0] == f"bids:raw:sub-{sub}/anat/sub-{sub}_T1w.nii.gz"
        assert (
            sidecar["USB"]["TStart"] == 100
            and sidecar["USB"]["Mode"] == "mask"
            and sidecar["USB"]["Seed"] == 0
            and len(sidecar["USB"]["Model"]["SHA256"]) == 64
        )
    zooms = nib.load(dataset / "sub-03" / "anat" / "sub-03_T1w.nii.gz").header.get_zooms()
    assert sorted(round(float(z), 3) for z in zooms) == [1.0, 1.0, 5.0]


def test_derivatives_validate(run):
    assert assert_valid_bids(run["out"]) == []
    description = json.loads((run["out"] / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "bids_usb"


def test_reports_exist(run):
    for sub in ("01", "02", "03", "04"):
        assert (run["out"] / f"sub-{sub}.html").is_file()
    assert not (run["out"] / "sub-05.html").exists()


def test_rerun_resumes_from_the_work_directory(run):
    results = sorted(run["work"].rglob("result_bias_correct.pklz"))
    assert len(results) == 4
    stamps = [p.stat().st_mtime_ns for p in results]
    healed = run["out"] / "sub-01" / "anat" / "sub-01_desc-healed_T1w.nii.gz"
    first = np.asanyarray(nib.load(healed).dataobj).copy()
    proc = subprocess.run(
        run["cmd"] + ["--participant-label", "01"], capture_output=True, text=True, env=run["env"], timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in results] == stamps  # cached nodes were not run again
    assert np.array_equal(np.asanyarray(nib.load(healed).dataobj), first)


def test_fill_residual_against_the_decoded_lesion(run, dataset):
    """The default (--fill-residual): the lesion holds the native-grid fill plus the model's
    change; --no-fill-residual puts the decoded healed brain there instead. The two differ inside
    the lesion, both keep the input outside the edit region, and the sidecars say which ran.
    The second run also asks for no blend band (--band-mm 0 1 on a 1 mm grid): its edit region is
    the lesion itself, and the sidecar reports the band."""
    out = run["out"].parent / "usb_decoded"
    cmd = [str(out) if part == str(run["out"]) else str(part) for part in run["cmd"]]
    proc = subprocess.run(
        cmd + ["--participant-label", "01", "--no-fill-residual", "--band-mm", "0", "1"],
        capture_output=True,
        text=True,
        env=run["env"],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    anat, residual_anat = out / "sub-01" / "anat", run["out"] / "sub-01" / "anat"
    decoded = np.asanyarray(nib.load(anat / "sub-01_desc-healed_T1w.nii.gz").dataobj)
    residual = np.asanyarray(nib.load(residual_anat / "sub-01_desc-healed_T1w.nii.gz").dataobj)
    lesion = np.asanyarray(nib.load(residual_anat / "sub-01_desc-lesion_mask.nii.gz").dataobj) > 0
    source = np.asanyarray(nib.load(dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz").dataobj)
    region = np.asanyarray(nib.load(anat / "sub-01_desc-editregion_mask.nii.gz").dataobj) > 0
    assert np.array_equal(decoded[~region], source[~region])
    assert not np.array_equal(decoded[lesion], residual[lesion])
    assert json.loads((anat / "sub-01_desc-healed_T1w.json").read_text())["USB"]["FillResidual"] is False
    assert json.loads((residual_anat / "sub-01_desc-healed_T1w.json").read_text())["USB"]["FillResidual"] is True
    default_region = np.asanyarray(nib.load(residual_anat / "sub-01_desc-editregion_mask.nii.gz").dataobj) > 0
    assert np.array_equal(region, lesion) and default_region.sum() > lesion.sum()
    assert json.loads((anat / "sub-01_desc-healed_T1w.json").read_text())["USB"]["BandMM"] == [0.0, 1.0]


def test_embed_a_participants_lesion_into_the_others(tmp_path, tiny_checkpoint):
    """--task embed --lesion-from sub-01: sub-01's lesion goes through its own registration onto
    the model grid, then into every brain; each output keeps its input outside the edit region."""
    bids = tmp_path / "bids"
    write_dataset(bids, participants=2, seed=5, n_healthy=1, voxel_size=(3.0, 3.0, 3.0), variety=False)
    donor = next(p.parent.parent.name for p in bids.glob("sub-*/anat/*_label-lesion_roi.nii.gz"))
    out = tmp_path / "out"
    code = main(
        [
            str(bids),
            str(out),
            "participant",
            "--task",
            "embed",
            "--lesion-from",
            donor,
            "--model",
            str(tiny_checkpoint),
            "-w",
            str(tmp_path / "work"),
            "--steps",
            "3",
            "--skull-stripped",
            "--nprocs",
            "1",
        ]
    )
    assert code == 0
    for sub in ("01", "02"):
        anat = out / f"sub-{sub}" / "anat"
        source = nib.load(bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        lesioned = nib.load(anat / f"sub-{sub}_desc-lesioned_T1w.nii.gz")
        region = np.asanyarray(nib.load(anat / f"sub-{sub}_desc-editregion_mask.nii.gz").dataobj) > 0
        lesion = np.asanyarray(nib.load(anat / f"sub-{sub}_desc-lesion_mask.nii.gz").dataobj) > 0
        assert lesioned.shape == source.shape and lesion.any() and region.any()
        assert np.array_equal(np.asanyarray(lesioned.dataobj)[~region], np.asanyarray(source.dataobj)[~region])
    assert (
        main(
            [
                str(bids),
                str(tmp_path / "out2"),
                "participant",
                "--task",
                "embed",
                "--lesion-from",
                "sub-99",
                "--model",
                str(tiny_checkpoint),
                "-w",
                str(tmp_path / "work"),
            ]
        )
        == 18
    )


def test_heal_without_a_mask_detects_and_leaves_a_healthy_brain_alone(tmp_path, tiny_checkpoint):
    """No lesion mask: the detect mode writes the anomaly map; with nothing above the threshold
    the output is the input bit for bit; with everything above it, the detection is a derivative
    mask (Type Lesion) and is what gets healed."""
    bids = tmp_path / "bids"
    write_dataset(bids, participants=1, seed=9, n_healthy=1, voxel_size=(3.0, 3.0, 3.0), variety=False)
    source = nib.load(next(bids.glob("sub-*/anat/*_T1w.nii.gz")))
    sub = source.get_filename().split("/")[-1].split("_")[0]
    common = [
        "participant",
        "--model",
        str(tiny_checkpoint),
        "--steps",
        "2",
        "--skull-stripped",
        "--nprocs",
        "1",
        "--skip-bids-validation",
    ]
    out = tmp_path / "quiet"
    assert main([str(bids), str(out), *common, "-w", str(tmp_path / "w1"), "--detect-threshold", "1e6"]) == 0
    anat = out / sub / "anat"
    healed = nib.load(anat / f"{sub}_desc-healed_T1w.nii.gz")
    assert np.array_equal(np.asanyarray(healed.dataobj), np.asanyarray(source.dataobj))
    assert (anat / f"{sub}_desc-anomaly_T1w.nii.gz").is_file()
    assert not (anat / f"{sub}_desc-detected_mask.nii.gz").exists()
    sidecar = json.loads((anat / f"{sub}_desc-healed_T1w.json").read_text())
    assert sidecar["USB"]["Mode"] == "detect" and sidecar["USB"]["DetectThreshold"] == 1e6

    out = tmp_path / "loud"
    assert (
        main(
            [
                str(bids),
                str(out),
                *common,
                "-w",
                str(tmp_path / "w2"),
                "--detect-threshold",
                "0",
                "--detect-min-ml",
                "0",
            ]
        )
        == 0
    )
    anat = out / sub / "anat"
    detected = nib.load(anat / f"{sub}_desc-detected_mask.nii.gz")
    assert detected.shape == source.shape and np.asanyarray(detected.dataobj).any()
    meta = json.loads((anat / f"{sub}_desc-detected_mask.json").read_text())
    assert meta["Type"] == "Lesion" and "anomaly map" in meta["Description"]
    healed = np.asanyarray(nib.load(anat / f"{sub}_desc-healed_T1w.nii.gz").dataobj)
    assert not np.array_equal(healed, np.asanyarray(source.dataobj))


def test_heal_mode_mask_skips_an_image_without_a_mask_with_one_line(tmp_path, tiny_checkpoint, capsys):
    bids = tmp_path / "bids"
    write_dataset(bids, participants=1, seed=9, n_healthy=1, voxel_size=(3.0, 3.0, 3.0), variety=False)
    code = main(
        [
            str(bids),
            str(tmp_path / "out"),
            "participant",
            "--model",
            str(tiny_checkpoint),
            "--heal-mode",
            "mask",
            "-w",
            str(tmp_path / "w"),
            "--skull-stripped",
            "--skip-bids-validation",
        ]
    )
    assert code == 66
    captured = capsys.readouterr()
    assert "--heal-mode mask needs a lesion mask" in captured.err.strip().splitlines()[-1]
    assert captured.out == ""  # stdout carries report paths only


def test_a_mask_from_a_coarser_grid_is_grown_and_both_masks_are_written(run, dataset, tmp_path):
    """A mask drawn on a 2 mm grid (users' masks often are) is resampled, then grown by half that
    grid's voxel before healing (--mask-growth auto, the default): the output's lesion mask is the
    mask healed, the mask as given is written beside it, and the lesion's sidecar says how."""
    from nibabel.processing import resample_from_to

    bids = tmp_path / "bids"
    shutil.copytree(dataset, bids, ignore=shutil.ignore_patterns("sub-0[2-5]"))
    mask_path = bids / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz"
    fine = nib.load(mask_path)
    coarse_affine = fine.affine.copy()
    coarse_affine[:3, :3] = fine.affine[:3, :3] @ np.diag(2.0 / np.asarray(fine.header.get_zooms()[:3]))
    shape = tuple(int(np.ceil(s * z / 2.0)) for s, z in zip(fine.shape, fine.header.get_zooms()))
    coarse = resample_from_to(
        nib.Nifti1Image(np.asanyarray(fine.dataobj).astype(np.float32), fine.affine), (shape, coarse_affine), order=1
    )
    img = nib.Nifti1Image((np.asanyarray(coarse.dataobj) >= 0.5).astype(np.uint8), coarse_affine)
    img.set_data_dtype(np.uint8)
    nib.save(img, mask_path)
    out = tmp_path / "out"
    cmd = [
        str(bids) if part == str(dataset) else str(out) if part == str(run["out"]) else str(part) for part in run["cmd"]
    ]
    cmd[cmd.index("-w") + 1] = str(tmp_path / "work")
    proc = subprocess.run(
        cmd + ["--participant-label", "01"], capture_output=True, text=True, env=run["env"], timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    anat = out / "sub-01" / "anat"
    healed_mask = np.asanyarray(nib.load(anat / "sub-01_desc-lesion_mask.nii.gz").dataobj) > 0
    given = np.asanyarray(nib.load(anat / "sub-01_desc-lesiongiven_mask.nii.gz").dataobj) > 0
    assert given.any() and (healed_mask & given).sum() == given.sum() and healed_mask.sum() > given.sum()
    sidecar = json.loads((anat / "sub-01_desc-lesion_mask.json").read_text())
    steps = {s["step"]: s for s in sidecar["MaskGrowth"]["steps"]}
    assert steps["grid"]["grown_mm"] == pytest.approx(1.0) and steps["grid"]["source_voxel_mm"] == [2.0, 2.0, 2.0]
    assert sidecar["MaskGrowth"]["healed_ml"] > sidecar["MaskGrowth"]["given_ml"]
    region = np.asanyarray(nib.load(anat / "sub-01_desc-editregion_mask.nii.gz").dataobj) > 0
    assert (region & healed_mask).sum() == healed_mask.sum()  # the grown mask is what was healed
    # The fills on both grids got the mask as given, for their per-lesion choice (GIVEN_DARK_RATIO).
    reports = {p.parent.parent.name: p.read_text() for p in (tmp_path / "work").rglob("_report/report.rst")}
    assert "given_model.nii.gz" in reports["usb"] and "lesion_given_native.nii.gz" in reports["to_native"]
    assert assert_valid_bids(out) == []


def test_embed_a_lesion_generated_for_each_brain(tmp_path, tiny_checkpoint, monkeypatch):
    """--task embed --lesion-from generate: the model proposes each brain's lesion on the model grid
    (paired sampling, here replaced by fixed pairs: an untrained tiny model's masks are noise),
    cut to the brain; it is drawn in, written on the input's grid, and the choice is in the sidecar."""
    import torch

    from usb_model.tasks import USB, GenerationResult

    def pairs(self, n, **kw):
        shape = tuple(self.cfg.grid.shape)
        masks = torch.zeros((n, *shape))
        centre = [s // 2 for s in shape]
        masks[:, centre[0] - 2 : centre[0] + 2, centre[1] - 2 : centre[1] + 2, centre[2] - 2 : centre[2] + 2] = 1
        masks[0, :2, :2, :2] = 1  # a few voxels outside the brain, dropped
        return GenerationResult(images=torch.full((n, *shape), 0.5), masks=masks)

    monkeypatch.setattr(USB, "generate_pairs", pairs)
    bids = tmp_path / "bids"
    write_dataset(bids, participants=1, seed=5, n_healthy=1, voxel_size=(3.0, 3.0, 3.0), variety=False)
    out = tmp_path / "out"
    args = [str(bids), str(out), "participant", "--task", "embed", "--lesion-from", "generate"]
    args += ["--model", str(tiny_checkpoint), "-w", str(tmp_path / "work"), "--steps", "3", "--skull-stripped"]
    assert main(args + ["--plugin", "Linear"]) == 0
    for anat in sorted(out.glob("sub-*/anat")):
        sub = anat.parent.name
        lesion = np.asanyarray(nib.load(anat / f"{sub}_desc-lesion_mask.nii.gz").dataobj) > 0
        brain = np.asanyarray(nib.load(anat / f"{sub}_desc-brain_mask.nii.gz").dataobj) > 0
        assert lesion.any() and (lesion & brain).sum() >= 0.8 * lesion.sum()
        usb = json.loads((anat / f"{sub}_desc-lesioned_T1w.json").read_text())["USB"]
        assert usb["GeneratedLesion"]["n_candidates"] == 4 and usb["GeneratedLesion"]["volume_ml"] > 0
