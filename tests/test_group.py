"""The group level (train, metrics, generate) on the CPU with the tiny preset.

A 3-participant synthetic dataset at 4 mm (2 healthy, 1 with a lesion mask), skull-stripped
already, preprocessed once into a work directory shared by the tests of this module; the
training runs are a few steps per stage. The CLI runs in this process (``bids_usb.cli.main``)
except the torchrun test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_usb.cli import main
from usb_model.synth.bids_writer import write_dataset

STEPS = "autoencoder=2,lesion=2,brain=2"


def _train_args(bids: Path, out: Path, work: Path, *extra: str) -> list[str]:
    return [
        str(bids),
        str(out),
        "group",
        "--group-task",
        "train",
        "--preset",
        "tiny",
        "-w",
        str(work),
        "--skull-stripped",
        "--skip-bids-validation",
        "--plugin",
        "Linear",
        "--omp-nthreads",
        "1",
        *extra,
    ]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    bids = root / "bids"
    write_dataset(bids, participants=3, seed=1, n_healthy=2, voxel_size=(4.0, 4.0, 4.0))
    return {"root": root, "bids": bids, "out": root / "out", "work": root / "work"}


@pytest.fixture(scope="module")
def trained(cohort):
    """The first training run: 2 steps per stage."""
    code = main(_train_args(cohort["bids"], cohort["out"], cohort["work"], "--train-steps", STEPS))
    assert code == 0
    return cohort["out"] / "models" / "usb"


# --------------------------------------------------------------------------------------------
# The refactored preprocessing keeps the participant level's node names
# --------------------------------------------------------------------------------------------


def test_participant_workflow_keeps_its_node_names(tiny_checkpoint, tmp_path):
    from bids_usb.model import ModelBundle
    from bids_usb.workflows.participant import (
        ImageJob,
        RunSettings,
        init_participant_wf,
        init_preprocess_wf,
    )

    anat = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), anat)
    mask = tmp_path / "sub-01_label-lesion_roi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), mask)
    job = ImageJob(anat=anat, entities={"subject": "01"}, lesion_mask=mask)
    wf = init_participant_wf(
        [job], ModelBundle.open(tiny_checkpoint), RunSettings(), tmp_path, tmp_path / "out", tmp_path / "work"
    )
    names = {n.fullname for n in wf._create_flat_graph().nodes()}
    for node in (
        "prepare",
        "bias_correct",
        "skull_strip",
        "register",
        "to_model_grid",
        "usb",
        "to_native",
        "ds_edited",  # one sink per output, named after its role
        "ds_brain_mask",
    ):
        assert f"bids_usb_wf.image_sub_01_T1w_wf.{node}" in names
    pre = init_preprocess_wf(anat, lesion_mask=mask)
    assert {"prepare", "bias_correct", "skull_strip", "register", "to_model_grid"} <= set(pre.list_node_names())


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_writes_a_loadable_checkpoint_curves_and_report(trained, cohort, capsys):
    from bids_usb.model import ModelBundle
    from usb_model.tasks import USB
    from usb_model.train import read_log

    bundle = ModelBundle.open(trained / "checkpoint")  # what --model takes: config, weights, template
    assert bundle.config.name == "tiny" and bundle.template["t1w"].shape == (32, 32, 32)
    usb = USB.from_checkpoint(trained / "checkpoint")
    assert usb.generate_pairs(1, seed=0, steps=2).images.shape == (1, 32, 32, 32)
    rows = read_log(trained / "log.tsv")
    assert [(r["stage"], r["step"]) for r in rows] == [("autoencoder", 2), ("lesion", 2), ("brain", 2)]
    for name in ("curves.png", "report.html", "figures/reconstructions.png", "figures/samples.png"):
        assert (trained / name).is_file(), name
    page = (trained / "report.html").read_text()
    assert "curves.png" in page and "figures/samples.png" in page and str(trained / "checkpoint") in page
    info = json.loads((trained / "training.json").read_text())
    assert [Path(p).name for p in info["healthy_images"]] == ["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"]
    assert [Path(p).name for p in info["lesion_shape_priors"]] == ["sub-03_label-lesion_roi.nii.gz"]
    meta = json.loads((trained / "checkpoint" / "meta.json").read_text())
    assert meta["training_data"]["lesion_shape_priors"] == ["sub-03_label-lesion_roi.nii.gz"]
    # The output is a derivatives dataset whose validator skips the models folder.
    assert "models/" in (cohort["out"] / ".bidsignore").read_text().split()
    assert json.loads((cohort["out"] / "dataset_description.json").read_text())["DatasetType"] == "derivative"


@pytest.mark.slow
def test_train_resumes_with_more_steps(trained, cohort, caplog, capsys):
    cached = sorted(cohort["work"].rglob("result_to_model_grid.pklz"))
    assert len(cached) == 3
    stamps = [p.stat().st_mtime_ns for p in cached]
    weights_before = (trained / "checkpoint" / "model.safetensors").read_bytes()
    code = main(
        _train_args(cohort["bids"], cohort["out"], cohort["work"], "--train-steps", "autoencoder=2,lesion=2,brain=4")
    )
    assert code == 0
    assert "(resuming)" in caplog.text  # progress goes to the log (stderr), not stdout
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # preprocessing came from the cache
    from usb_model.checkpoint import read_meta
    from usb_model.train import read_log

    assert read_meta(trained / "checkpoint")["notes"]["trained_steps"] == {"autoencoder": 2, "lesion": 2, "brain": 4}
    assert [(r["stage"], r["step"]) for r in read_log(trained / "log.tsv")][-2:] == [("brain", 2), ("brain", 4)]
    assert (trained / "checkpoint" / "model.safetensors").read_bytes() != weights_before
    # An earlier stage cannot grow once a later one trained on it: a usage error, before any work.
    code = main(_train_args(cohort["bids"], cohort["out"], cohort["work"], "--train-steps", "autoencoder=5"))
    assert code == 64
    assert "cannot train autoencoder further" in capsys.readouterr().err


@pytest.mark.slow
def test_existing_model_dir_that_cannot_be_resumed_is_73_unless_overwrite(trained, cohort, capsys):
    out, bids, work = cohort["out"], cohort["bids"], cohort["work"]
    junk = out / "models" / "junk"
    junk.mkdir(parents=True)
    (junk / "notes.txt").write_text("not a training directory")
    assert main(_train_args(bids, out, work, "--model-name", "junk", "--train-steps", "autoencoder=1")) == 73
    assert "not a bids_usb training directory" in capsys.readouterr().err
    assert (junk / "notes.txt").is_file()
    # A training state of another architecture (the demo grid) cannot be resumed either.
    assert (
        main(_train_args(bids, out, work, "--train-steps", "autoencoder=1", "--preset", "demo")) == 73
    )  # the last --preset wins
    assert "another grid" in capsys.readouterr().err
    # --no-resume on a state: 73 too.
    assert main(_train_args(bids, out, work, "--no-resume", "--train-steps", STEPS)) == 73
    # --overwrite replaces the junk directory with a fresh training directory.
    assert (
        main(_train_args(bids, out, work, "--model-name", "junk", "--train-steps", "autoencoder=1", "--overwrite")) == 0
    )
    assert not (junk / "notes.txt").exists() and (junk / "state" / "trainer.json").is_file()


def test_no_healthy_image_is_66(tmp_path, capsys):
    bids = tmp_path / "lesioned"
    write_dataset(bids, participants=2, seed=2, n_healthy=0, voxel_size=(6.0, 6.0, 6.0), variety=False)
    code = main(_train_args(bids, tmp_path / "out", tmp_path / "work", "--train-steps", "autoencoder=1"))
    assert code == 66
    assert "no healthy T1w image" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before any preprocessing


def test_group_needs_a_task_and_a_valid_preset(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    assert main([str(bids), str(tmp_path / "out"), "group"]) == 64
    assert "--group-task" in capsys.readouterr().err
    assert main([str(bids), str(tmp_path / "out"), "group", "--group-task", "train", "--preset", "nope"]) == 64
    assert (
        main(
            [
                str(bids),
                str(tmp_path / "out"),
                "group",
                "--group-task",
                "train",
                "--preset",
                "tiny",
                "--train-steps",
                "vae=3",
            ]
        )
        == 64
    )


@pytest.mark.slow
def test_train_under_torchrun_uses_two_processes(trained, cohort):
    """Two gloo processes: rank 0 finds the preprocessing cached; both train (DDP), rank 0 writes."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "bids_usb",
        *_train_args(
            cohort["bids"],
            cohort["out"],
            cohort["work"],
            "--model-name",
            "ddp",
            "--train-steps",
            "autoencoder=1,lesion=1,brain=1",
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = cohort["out"] / "models" / "ddp"
    assert json.loads((model / "training.json").read_text())["world_size"] == 2
    assert json.loads((model / "checkpoint" / "meta.json").read_text())["notes"]["world_size"] == 2
    assert proc.stderr.count("preprocessing 3 image(s)") == 1  # rank 0 only (progress goes to stderr)
    assert proc.stdout.split() == [str(model / "checkpoint"), str(model / "report.html")]  # stdout: what was written


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _put(path: Path, data: np.ndarray, like: nib.Nifti1Image, sidecar: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, like.affine), path)
    if sidecar is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))


@pytest.fixture(scope="module")
def participant_outputs(cohort):
    """Fake participant-level outputs with known answers, and a ground truth missing sub-03's
    healthy image. sub-01: healed = ground truth. sub-02: ground truth + Gaussian noise of 5 %
    of the brain's range (expected PSNR 26.02 dB), with a small lesion mask. sub-03: healed
    without ground truth, and an embedded lesion that brightens exactly the mask's voxels."""
    bids, root = cohort["bids"], cohort["root"]
    out = root / "metrics_out"
    gt = root / "truth"
    shutil.copytree(bids / "derivatives" / "usb-synth", gt)
    (gt / "sub-03" / "anat" / "sub-03_desc-healthy_T1w.nii.gz").unlink()
    rng = np.random.default_rng(0)
    expected = {}
    for sub in ("01", "02", "03"):
        anat = gt / f"sub-{sub}" / "anat"
        raw = nib.load(bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        side = {"Sources": [f"bids:raw:sub-{sub}/anat/sub-{sub}_T1w.nii.gz"]}
        target = out / f"sub-{sub}" / "anat"
        if sub == "03":
            _put(target / f"sub-{sub}_desc-healed_T1w.nii.gz", np.asanyarray(raw.dataobj).astype(np.float32), raw, side)
            continue
        truth_img = nib.load(anat / f"sub-{sub}_desc-healthy_T1w.nii.gz")
        truth = np.asanyarray(truth_img.dataobj).astype(np.float64)
        brain = np.asanyarray(nib.load(anat / f"sub-{sub}_desc-brain_mask.nii.gz").dataobj) > 0
        span = truth[brain].max() - truth[brain].min()
        healed = truth if sub == "01" else truth + 0.05 * span * rng.standard_normal(truth.shape)
        _put(target / f"sub-{sub}_desc-healed_T1w.nii.gz", healed.astype(np.float32), truth_img, side)
        if sub == "02":
            lesion = np.zeros(truth.shape, np.uint8)
            centre = np.argwhere(brain).mean(axis=0).astype(int)
            lesion[tuple(slice(c - 3, c + 3) for c in centre)] = 1
            _put(target / f"sub-{sub}_desc-lesion_mask.nii.gz", lesion, truth_img, {"Type": "Lesion"})
        expected[sub] = 10 * math.log10(1 / 0.05**2) if sub == "02" else math.inf
    # sub-03 embedded: its raw image brightened by half the range inside its (raw) lesion mask.
    raw = nib.load(bids / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    data = np.asanyarray(raw.dataobj).astype(np.float64)
    roi = np.asanyarray(nib.load(bids / "sub-03" / "anat" / "sub-03_label-lesion_roi.nii.gz").dataobj) > 0
    lesioned = data + 0.5 * (data[data > 0].max() - data[data > 0].min()) * roi
    target = out / "sub-03" / "anat"
    _put(
        target / "sub-03_desc-lesioned_T1w.nii.gz",
        lesioned.astype(np.float32),
        raw,
        {"Sources": ["bids:raw:sub-03/anat/sub-03_T1w.nii.gz"]},
    )
    _put(target / "sub-03_desc-lesion_mask.nii.gz", roi.astype(np.uint8), raw, {"Type": "Lesion"})
    (out / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fake",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "bids_usb"}],
            }
        )
    )
    return {
        "out": out,
        "gt": gt,
        "expected": expected,
        "roi_ml": float(roi.sum()) * float(np.prod(raw.header.get_zooms()[:3])) / 1000,
    }


def _read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_metrics_known_answers_and_missing_ground_truth(cohort, participant_outputs, capsys, caplog):
    out = participant_outputs["out"]
    code = main(
        [
            str(cohort["bids"]),
            str(out),
            "group",
            "--group-task",
            "metrics",
            "--ground-truth",
            str(participant_outputs["gt"]),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert [line.rsplit("/", 1)[-1] for line in printed.split()] == ["group_usb.tsv", "group_usb.json", "group.html"]
    assert "WARNING" in caplog.text and "sub-03_desc-healed_T1w.nii.gz" in caplog.text  # named, and left out
    rows = {(r["participant_id"], r["task"]): r for r in _read_tsv(out / "group_usb.tsv")}
    assert set(rows) == {("sub-01", "heal"), ("sub-02", "heal"), ("sub-03", "embed")}
    identical = rows[("sub-01", "heal")]
    assert identical["psnr_brain"] == "inf" and identical["psnr_outside"] == "inf"
    assert float(identical["l1_brain"]) == 0.0 and float(identical["ssim_brain"]) == pytest.approx(1.0)
    assert identical["psnr_lesion"] == "n/a"  # a healthy participant has no lesion region
    noisy = rows[("sub-02", "heal")]
    assert float(noisy["psnr_brain"]) == pytest.approx(participant_outputs["expected"]["02"], abs=0.2)
    assert float(noisy["psnr_lesion"]) == pytest.approx(participant_outputs["expected"]["02"], abs=1.5)
    assert float(noisy["l1_brain"]) == pytest.approx(
        0.05 * math.sqrt(2 / math.pi), rel=0.05
    )  # E|N(0, s)| = s sqrt(2/pi)
    assert 0 < float(noisy["ssim_brain"]) < 1 and noisy["lesion_mask_from"] == "output"
    embedded = rows[("sub-03", "embed")]
    assert float(embedded["dice"]) == pytest.approx(1.0)
    assert float(embedded["lesion_volume_ml"]) == pytest.approx(participant_outputs["roi_ml"])
    assert embedded["psnr_outside"] == "inf"  # nothing outside the mask changed

    summary = json.loads((out / "group_usb.json").read_text())  # strict JSON: infinities as "inf"
    assert summary["left_out"]["no_ground_truth_or_input"] == ["sub-03_desc-healed_T1w.nii.gz"]
    assert summary["metrics"]["heal: psnr_brain"]["n_inf"] == 1
    assert set(summary["cohort"]["healed vs ground truth"]) >= {"mmd_rbf", "kid_mean", "kid_std"}
    page = (out / "group.html").read_text()
    assert "group/psnr.png" in page and (out / "group" / "psnr.png").is_file()
    assert "sub-03_desc-healed_T1w.nii.gz" in page  # the warning is on the page too
    assert "group_usb.tsv" in (out / ".bidsignore").read_text()


def test_metrics_without_any_ground_truth_is_66(cohort, tmp_path, capsys):
    raw = nib.load(cohort["bids"] / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _put(
        tmp_path / "out" / "sub-01" / "anat" / "sub-01_desc-healed_T1w.nii.gz",
        np.asanyarray(raw.dataobj).astype(np.float32),
        raw,
        {},
    )
    empty_truth = tmp_path / "truth"
    empty_truth.mkdir()
    code = main(
        [
            str(cohort["bids"]),
            str(tmp_path / "out"),
            "group",
            "--group-task",
            "metrics",
            "--ground-truth",
            str(empty_truth),
        ]
    )
    assert code == 66
    assert "sub-01_desc-healed_T1w.nii.gz" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_pairs_writes_a_valid_reproducible_dataset(trained, cohort, tmp_path):
    from bids_usb.validation import assert_valid_bids

    args = [
        "group",
        "--group-task",
        "generate",
        "--model",
        str(trained / "checkpoint"),
        "--n-generate",
        "3",
        "--batch-size",
        "2",
        "--seed",
        "5",
        "--omp-nthreads",
        "1",
    ]
    first, second = tmp_path / "gen1", tmp_path / "gen2"
    assert main([str(tmp_path), str(first), *args]) == 0
    assert assert_valid_bids(first, recursive=True) == []
    subjects = sorted(p.name for p in first.glob("sub-*"))
    assert subjects == ["sub-g001", "sub-g002", "sub-g003"]
    img = nib.load(first / "sub-g001" / "anat" / "sub-g001_T1w.nii.gz")
    template = json.loads((trained / "checkpoint" / "meta.json").read_text())["grid_affine"]
    assert img.shape == (32, 32, 32) and np.allclose(img.affine, template)
    sidecar = json.loads((first / "sub-g001" / "anat" / "sub-g001_T1w.json").read_text())
    assert len(sidecar["USB"]["Model"]["SHA256"]) == 64 and sidecar["USB"]["CohortSeed"] == 5
    mask_meta = json.loads(
        (first / "derivatives" / "usb-generate" / "sub-g003" / "anat" / "sub-g003_desc-lesion_mask.json").read_text()
    )
    assert mask_meta["Type"] == "Lesion"
    description = json.loads((first / "dataset_description.json").read_text())
    assert "seed 5" in description["GeneratedBy"][0]["Description"]
    assert sidecar["USB"]["Model"]["Name"] == "usb"  # models/<name>/checkpoint
    # Same seed and batch size: the same cohort (the training directory is accepted for --model too).
    assert (
        main([str(tmp_path), str(second), *[str(trained) if a == str(trained / "checkpoint") else a for a in args]])
        == 0
    )
    for sub in subjects:
        a = np.asanyarray(nib.load(first / sub / "anat" / f"{sub}_T1w.nii.gz").dataobj)
        b = np.asanyarray(nib.load(second / sub / "anat" / f"{sub}_T1w.nii.gz").dataobj)
        assert np.array_equal(a, b)
    # A folder that is not an earlier cohort is never written into.
    assert main([str(tmp_path), str(trained), *args]) == 73
    # An earlier cohort is replaced only with --overwrite.
    assert main([str(tmp_path), str(first), *args]) == 73
    assert main([str(tmp_path), str(first), *args, "--overwrite"]) == 0
    # metrics on a generated cohort: MMD and KID against the reference brains (the ground truth).
    truth = cohort["bids"] / "derivatives" / "usb-synth"
    assert (
        main([str(cohort["bids"]), str(first), "group", "--group-task", "metrics", "--ground-truth", str(truth)]) == 0
    )
    distances = json.loads((first / "group_usb.json").read_text())["cohort"]["generated vs reference"]
    assert distances["n_a"] == 3 and distances["n_b"] == 3 and "mmd_rbf" in distances and "kid_mean" in distances


@pytest.mark.slow
def test_generate_from_template_space_masks(trained, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    # A ball of radius 15 mm at MNI (25, -10, 15) on a 2 mm grid: the masks' grid is not the model's.
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (91, 109, 91)], indexing="ij"), -1)
    world = ijk * 2.0 + affine[:3, 3]
    ball = (np.linalg.norm(world - np.array([25.0, -10.0, 15.0]), axis=-1) < 15).astype(np.uint8)
    nib.save(nib.Nifti1Image(ball, affine), masks / "ball.nii.gz")
    out = tmp_path / "gen"
    assert (
        main(
            [
                str(masks),
                str(out),
                "group",
                "--group-task",
                "generate",
                "--model",
                str(trained / "checkpoint"),
                "--masks",
                str(masks),
                "--n-generate",
                "2",
                "--seed",
                "1",
                "--omp-nthreads",
                "1",
            ]
        )
        == 0
    )
    for sub in ("sub-g001", "sub-g002"):
        mask = nib.load(out / "derivatives" / "usb-generate" / sub / "anat" / f"{sub}_desc-lesion_mask.nii.gz")
        data = np.asanyarray(mask.dataobj) > 0
        volume = data.sum() * 6.0**3 / 1000
        assert volume == pytest.approx(4 / 3 * math.pi * 15**3 / 1000, rel=0.5)  # about 14 mL, on 6 mm voxels
        centre = nib.affines.apply_affine(mask.affine, np.argwhere(data).mean(axis=0))
        assert np.allclose(centre, (25, -10, 15), atol=6)
        assert "ball.nii.gz" in json.loads((out / sub / "anat" / f"{sub}_T1w.json").read_text())["Sources"][0]
    assert (out / "participants.tsv").read_text().count("ball.nii.gz") == 2


def test_generate_finds_a_bids_datasets_lesion_masks_through_pybids(tmp_path):
    """Raw label-lesion ROIs and lesion masks of derivatives datasets are found; brain masks, a
    derivatives folder without a dataset_description.json and the images themselves are not."""
    from bids_usb.group.generate import find_masks

    def save(rel, meta=None):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), path)
        if meta is not None:
            path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta))
        return path

    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    expected = {
        save("sub-01/anat/sub-01_label-lesion_roi.nii.gz"),
        save("sub-02/anat/sub-02_acq-mprage_mask.nii.gz", {"Type": "Lesion"}),
        save("derivatives/masks/sub-03/anat/sub-03_desc-lesion_mask.nii.gz"),
    }
    (tmp_path / "derivatives" / "masks" / "dataset_description.json").write_text(
        '{"Name": "m", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}'
    )
    save("sub-01/anat/sub-01_T1w.nii.gz")
    save("sub-01/anat/sub-01_desc-brain_mask.nii.gz", {"Type": "Brain"})
    save("derivatives/loose/sub-04/anat/sub-04_desc-lesion_mask.nii.gz")  # not a dataset
    assert set(find_masks(tmp_path)) == expected
