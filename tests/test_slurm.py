"""The cluster recipes of docs/recipes.md, run against a real one-node SLURM on localhost.

``scripts/slurm_cluster.sh`` starts slurmctld, slurmd and slurmdbd (so that ``sacct`` lists array
tasks as a production cluster does); ``.ci/run`` starts it and exports ``SLURM_CONF``, and where
that is not set this module starts its own cluster (without installing anything) or skips.
Everything runs as the recipes say: ``sbatch --array`` of the script copied out of recipes.md,
``bids_usb --plugin SLURM`` with nipype's own SLURM plugin, ``torchrun`` inside ``sbatch``.
The tiny untrained model and a 3-participant dataset at 4 mm keep each participant under a
minute on one CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_usb.validation import assert_valid_bids
from usb_model.synth.bids_writer import write_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL")
PREPROCESSED = "to_model_grid/result_to_model_grid.pklz"  # the last node before the model runs


def _works(env: dict) -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The environment for sbatch & co.: SLURM_CONF of a running cluster (CI's, or one started here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if os.environ.get("SLURM_CONF") and _works(env):
        yield env
        return
    if shutil.which("bash") is None:
        pytest.skip("no bash to run scripts/slurm_cluster.sh")
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "start", str(state)],
        env={**env, "BIDS_USB_SLURM_INSTALL": "no"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    if start.returncode != 0:
        reason = (start.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"SLURM cannot start here: {reason}")
    env["SLURM_CONF"] = str(state / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "slurm_cluster.sh"), "stop", str(state)], timeout=120)


def _run(env: dict, *args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=60).stdout


def _sacct(env: dict, job: str) -> dict[str, tuple[str, str]]:
    """``{"<job>_<task>": (state, exit code)}`` of the job's allocations, from slurmdbd."""
    rows = _run(env, "sacct", "-j", job, "-X", "-P", "-n", "--format=JobID,State,ExitCode")
    return {r.split("|")[0]: (r.split("|")[1].split()[0], r.split("|")[2]) for r in rows.splitlines() if r}


def _wait(env: dict, job: str, n: int, timeout: float) -> dict[str, tuple[str, str]]:
    """Until sacct shows ``n`` allocations of ``job``, all finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _sacct(env, job)
        if len(rows) == n and all(state in TERMINAL for state, _ in rows.values()):
            return rows
        time.sleep(1)
    _run(env, "scancel", job)
    raise AssertionError(f"job {job} did not finish in {timeout} s: {_sacct(env, job)}")


def _recipe_script() -> str:
    """The native array script of docs/recipes.md, as it stands there."""
    text = (ROOT / "docs" / "recipes.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    (script,) = [b for b in blocks if "bids=${BIDS:-" in b]
    return script


def _images(out: Path, sub: str) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(p).dataobj) for p in sorted((out / f"sub-{sub}" / "anat").glob("*.nii.gz"))}


def _sidecars(out: Path, sub: str) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / f"sub-{sub}" / "anat").glob("*.json"))}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, tiny_checkpoint):
    """3 participants at 4 mm, sub-02's T1w not a NIfTI (the app's exit code 65), the recipe's
    files (participants.txt, logs/, the script) in the submission folder."""
    root = tmp_path_factory.mktemp("cluster")
    bids = root / "bids"
    write_dataset(bids, participants=3, seed=1, n_healthy=1, voxel_size=(4.0, 4.0, 4.0), variety=False)
    (bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"not an image\n" * 10)
    submit = root / "submit"
    submit.mkdir()
    (submit / "participants.txt").write_text("".join(f"{p.name}\n" for p in sorted(bids.glob("sub-*"))))
    (submit / "logs").mkdir()
    (submit / "bids_usb_array_native.sh").write_text(_recipe_script())
    extra = ["--model", str(tiny_checkpoint), "--steps", "2", "--skull-stripped", "--omp-nthreads", "1"]
    return {"root": root, "bids": bids, "submit": submit, "extra": extra}


def _sbatch_array(env: dict, cohort: dict, out: Path, work: Path, tasks: str) -> str:
    env = {**env, "BIDS": str(cohort["bids"]), "OUT": str(out), "WORK": str(work)}
    args = ["sbatch", "--parsable", f"--array={tasks}", "-c", "1", "--mem=1G", "bids_usb_array_native.sh"]
    return _run(env, *args, *cohort["extra"], cwd=cohort["submit"]).strip()


@pytest.fixture(scope="module")
def array(slurm, cohort):
    """The array recipe over the 3 participants, 2 tasks at a time on the 2-CPU node; a thread
    notes the inode of dataset_description.json the moment it appears."""
    out, work = cohort["root"] / "out", cohort["root"] / "work"
    seen: list[int] = []
    done = threading.Event()

    def watch():
        desc = out / "dataset_description.json"
        while not done.is_set():
            try:
                seen.append(desc.stat().st_ino)
            except FileNotFoundError:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    job = _sbatch_array(slurm, cohort, out, work, "1-3")
    try:
        rows = _wait(slurm, job, 3, timeout=600)
    finally:
        done.set()
        watcher.join()
    return {"job": job, "rows": rows, "out": out, "work": work, "inodes": seen, "seconds": time.monotonic() - started}


def test_sacct_shows_each_tasks_exit_code(array):
    job = array["job"]
    assert array["rows"] == {
        f"{job}_1": ("COMPLETED", "0:0"),
        f"{job}_2": ("FAILED", "65:0"),
        f"{job}_3": ("COMPLETED", "0:0"),
    }, array["rows"]


def test_the_failed_tasks_log_names_the_bad_input(array, cohort):
    log = (cohort["submit"] / "logs" / f"bids_usb_{array['job']}_2.log").read_text()
    assert "sub-02_T1w.nii.gz" in log.strip().splitlines()[-1], log[-2000:]


def test_two_tasks_into_one_dataset_lose_nothing(array, cohort):
    """Both good participants complete and the dataset validates; dataset_description.json was
    written once (the inode first seen is the one at the end) and holds the app's description."""
    from bids_usb.derivatives import dataset_description

    out = array["out"]
    for sub in ("01", "03"):
        names = set(_images(out, sub))
        assert {f"sub-{sub}_desc-healed_T1w.nii.gz", f"sub-{sub}_desc-brain_mask.nii.gz"} <= names, names
        assert (out / f"sub-{sub}.html").is_file()
    assert not (out / "sub-02").exists()
    assert assert_valid_bids(out) == []
    desc = out / "dataset_description.json"
    assert set(array["inodes"]) == {desc.stat().st_ino}
    assert json.loads(desc.read_text()) == dataset_description(cohort["bids"])


def test_a_cancelled_task_resumes_from_its_work_directory(slurm, cohort, array):
    """scancel once the preprocessing is done, resubmit with the same work directory: the
    preprocessing is not run again, and the outputs equal the uninterrupted array task's."""
    out, work = cohort["root"] / "out_cancel", cohort["root"] / "work_cancel"
    job = _sbatch_array(slurm, cohort, out, work, "1")
    marker = work / "sub-01" / "bids_usb_wf" / "image_sub_01_T1w_wf" / PREPROCESSED
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), _sacct(slurm, job)
    _run(slurm, "scancel", job)
    rows = _wait(slurm, job, 1, timeout=120)
    assert rows[f"{job}_1"][0] == "CANCELLED", rows
    assert not (out / "sub-01" / "anat" / "sub-01_desc-healed_T1w.nii.gz").exists()
    stamp = marker.stat().st_mtime_ns

    again = _sbatch_array(slurm, cohort, out, work, "1")
    assert _wait(slurm, again, 1, timeout=300) == {f"{again}_1": ("COMPLETED", "0:0")}
    assert marker.stat().st_mtime_ns == stamp  # the preprocessing was reused, not run again
    reference, resumed = _images(array["out"], "01"), _images(out, "01")
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert np.array_equal(reference[name], resumed[name]), name
    assert _sidecars(array["out"], "01") == _sidecars(out, "01")


def test_nipype_slurm_plugin_matches_multiproc(slurm, cohort, array):
    """The --plugin SLURM recipe for one participant: nipype's SLURMPlugin submits the graph's
    nodes as jobs (without LOGNAME in the environment, as in CI and containers, where nipype
    alone fails with a KeyError); the outputs equal the array task's, which ran MultiProc."""
    out, work = cohort["root"] / "out_plugin", cohort["root"] / "work_plugin"
    env = {k: v for k, v in slurm.items() if k != "LOGNAME"}
    since = _run(env, "date", "+%Y-%m-%dT%H:%M:%S").strip()
    plugin_args = json.dumps({"sbatch_args": "-c 1 --mem=1G", "max_jobs": 2})
    cmd = ["bids_usb", str(cohort["bids"]), str(out), "participant", "--participant-label", "03"]
    cmd += [
        "--skip-bids-validation",
        "-w",
        str(work),
        *cohort["extra"],
        "--plugin",
        "SLURM",
        "--plugin-args",
        plugin_args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _run(env, "sacct", "-X", "-P", "-n", "-S", since, "--format=JobName,State,ExitCode").splitlines()
    jobs = [r.split("|") for r in rows if r.split("|")[0].endswith(".bids_usb_wf.root")]
    assert len(jobs) > 1 and all(state == "COMPLETED" and code == "0:0" for _, state, code in jobs), rows
    assert any(name.startswith("usb.image_sub_03_T1w_wf") for name, _, _ in jobs)  # the model ran as a job
    reference, plugin = _images(array["out"], "03"), _images(out, "03")
    assert reference.keys() == plugin.keys()
    for name in reference:
        assert np.array_equal(reference[name], plugin[name]), name
    assert _sidecars(array["out"], "03") == _sidecars(out, "03")


# --------------------------------------------------------------------------------------------
# Group-level training: torchrun (2 gloo processes) started by srun inside sbatch
# --------------------------------------------------------------------------------------------

TRAIN_STEPS = {"autoencoder": 2, "lesion": 2, "brain": 2}
TORCHRUN_JOB = """#!/bin/bash
#SBATCH --job-name=bids_usb_train
#SBATCH --output=train_%j.log
set -euo pipefail
srun torchrun --standalone --nproc-per-node 2 -m bids_usb "$@"
"""


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """test_group's cohort (3 participants at 4 mm, 2 healthy) and its training arguments."""
    from test_group import _train_args

    root = tmp_path_factory.mktemp("train")
    bids = root / "bids"
    write_dataset(bids, participants=3, seed=1, n_healthy=2, voxel_size=(4.0, 4.0, 4.0))
    (root / "train.sh").write_text(TORCHRUN_JOB)
    steps = ",".join(f"{k}={v}" for k, v in TRAIN_STEPS.items())

    def args(out: Path) -> list[str]:
        return _train_args(bids, out, root / "work", "--model-name", "ddp", "--train-steps", steps)

    return {"root": root, "args": args}


def _sbatch_training(env: dict, training: dict, out: Path) -> str:
    env = {**env, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = ["sbatch", "--parsable", "-N", "1", "-n", "1", "-c", "2", "--mem=3G", "train.sh", *training["args"](out)]
    return _run(env, *cmd, cwd=training["root"]).strip()


def _weights(model: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model / "checkpoint" / "model.safetensors"))


def _progress(model: Path) -> dict:
    from usb_model.checkpoint import load_state

    return load_state(model / "state", "trainer")["progress"]


def test_torchrun_under_sbatch_trains_as_outside_slurm_and_resumes_after_scancel(slurm, training):
    """sbatch + srun start torchrun with 2 gloo processes: the checkpoint equals, tensor for
    tensor (the DDP test's tolerance), that of the same torchrun outside SLURM. A second job
    cancelled after its first save (the autoencoder stage) and submitted again resumes from
    the saved state (the progress counter goes on from there, the log is not restarted) and
    ends with the same checkpoint."""
    import torch

    from usb_model.train import read_log

    root = training["root"]
    env = {**slurm, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    reference = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bids_usb"]
        + training["args"](root / "out_ref"),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _weights(root / "out_ref" / "models" / "ddp")

    job = _sbatch_training(slurm, training, root / "out_slurm")
    assert _wait(slurm, job, 1, timeout=600) == {job: ("COMPLETED", "0:0")}, (root / f"train_{job}.log").read_text()
    model = root / "out_slurm" / "models" / "ddp"
    assert json.loads((model / "training.json").read_text())["world_size"] == 2
    got = _weights(model)
    assert got.keys() == expected.keys()
    assert not [k for k in expected if not torch.equal(expected[k], got[k])]

    out = root / "out_cancel"
    model = out / "models" / "ddp"
    job = _sbatch_training(slurm, training, out)
    deadline = time.monotonic() + 600
    while not (model / "state" / "trainer.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    _run(slurm, "scancel", job)
    assert _wait(slurm, job, 1, timeout=120)[job][0] == "CANCELLED"
    saved = _progress(model)
    assert saved["autoencoder"] == 2 and saved["brain"] < 2, saved  # stopped mid-way, after the first save
    again = _sbatch_training(slurm, training, out)
    assert _wait(slurm, again, 1, timeout=600) == {again: ("COMPLETED", "0:0")}, (
        root / f"train_{again}.log"
    ).read_text()
    assert "(resuming)" in (root / f"train_{again}.log").read_text()
    assert _progress(model) == TRAIN_STEPS
    rows = read_log(model / "log.tsv")
    assert [(r["stage"], r["step"]) for r in rows] == [
        (s, 2) for s in TRAIN_STEPS
    ]  # a row every 10 steps and at the end of a stage
    resumed = _weights(model)
    assert not [k for k in expected if not torch.equal(expected[k], resumed[k])]
