"""Faults a cluster job meets: two participants at once into one output directory, a job killed
with SIGKILL and run again with the same work directory, and Ctrl-C.

Each run is a real ``python -m bids_usb`` process on a small synthetic dataset (2 mm voxels)
with the untrained tiny model, so these tests check the process mechanics, not the healing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from usb_model.synth.bids_writer import write_dataset

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    bids = tmp_path_factory.mktemp("faults") / "bids"
    write_dataset(bids, participants=2, seed=11, n_healthy=0, voxel_size=(2.0, 2.0, 2.0))
    return bids


def _cmd(bids: Path, out: Path, work: Path, model: Path, label: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bids_usb",
        str(bids),
        str(out),
        "participant",
        "--model",
        str(model),
        "-w",
        str(work),
        "--participant-label",
        label,
        "--steps",
        "2",
        "--nprocs",
        "2",
        "--omp-nthreads",
        "1",
        "--skip-bids-validation",
    ]


def _start(cmd: list[str]) -> subprocess.Popen:
    # A session of its own, as a batch job has: signals can go to its whole process group.
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, timeout: float = 600) -> None:
    root, pattern = path_glob
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {pattern} appeared: {proc.stderr.read()}")
        if any(root.glob(pattern)):
            return
        time.sleep(0.5)
    pytest.fail(f"{pattern} did not appear under {root} within {timeout} s")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _niftis(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asanyarray(nib.load(str(p)).dataobj) for p in sorted(out.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def concurrent(dataset, tiny_checkpoint, tmp_path_factory):
    """sub-01 and sub-02 at the same time, into one output directory (work directories apart)."""
    root = tmp_path_factory.mktemp("concurrent")
    out = root / "out"
    procs = [_start(_cmd(dataset, out, root / f"work{label}", tiny_checkpoint, label)) for label in ("01", "02")]
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in procs]
    return out, results


def test_two_participants_at_once_into_one_output_directory(concurrent):
    out, results = concurrent
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        assert stdout.strip().endswith(".html")  # stdout: the report paths only
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bids_usb"
    assert (out / "sub-01.html").is_file() and (out / "sub-02.html").is_file()


def test_a_killed_run_resumes_to_the_same_outputs(concurrent, dataset, tiny_checkpoint, tmp_path):
    """SIGKILL to the whole job once registration is done, then the same command again: the
    outputs equal an uninterrupted run's (same seed), voxel for voxel."""
    reference_out, _ = concurrent
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = _cmd(dataset, out, work, tiny_checkpoint, "01")
    proc = _start(cmd)
    _wait_for((work, "bids_usb_wf/*/register/result_register.pklz"), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not any(out.rglob("*_desc-healed_T1w.nii.gz")), "the kill came too late to test a resume"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    reference = {k: v for k, v in _niftis(reference_out).items() if k.startswith("sub-01")}
    resumed = _niftis(out)
    assert sorted(resumed) == sorted(reference)
    for name, data in reference.items():
        assert np.array_equal(resumed[name], data), f"{name} differs after the resume"


def test_ctrl_c_stops_within_seconds_and_leaves_no_worker(dataset, tiny_checkpoint, tmp_path):
    work = tmp_path / "work"
    proc = _start(_cmd(dataset, tmp_path / "out", work, tiny_checkpoint, "02"))
    _wait_for((work, "bids_usb_wf/*/bias_correct"), proc)  # the workflow is running nodes
    time.sleep(1.0)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    rc = proc.wait(timeout=60)
    took = time.monotonic() - sent
    stderr = proc.stderr.read().strip().splitlines()
    assert rc == 130, stderr
    assert took < 15, f"Ctrl-C took {took:.1f} s"
    assert "resume" in stderr[-1] and stderr[-1].startswith("bids_usb: error: ")
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(proc.pid), "a worker process outlived the interrupted run"


class _Tmpfs:
    """A small tmpfs the test mounts (root only): a file system that fills up for real."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or 'mount failed'})")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def _partial_files(root: Path) -> list[str]:
    """Output files that are not whole: temporary names, or NIfTIs that do not load."""
    bad = [str(p) for p in root.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]
    for path in root.rglob("*.nii.gz"):
        try:
            np.asanyarray(nib.load(str(path)).dataobj)
        except Exception:
            bad.append(str(path))
    return [b for b in bad if not b.endswith(".bidsignore")]


@pytest.mark.parametrize("full", ["output", "work"])
def test_a_full_file_system_ends_with_74_and_one_line_then_resumes(full, dataset, tiny_checkpoint, tmp_path):
    """The output (or work) directory on a file system with room for almost nothing: exit 74
    within the run's first minutes (never a hang), one line naming the directory, no partial
    file; once space is freed the same command finishes, reusing the work directory."""
    fs = _Tmpfs(tmp_path / "fs", "64k" if full == "output" else "400k")
    try:
        out = fs.path / "out" if full == "output" else tmp_path / "out"
        work = fs.path / "work" if full == "work" else tmp_path / "work"
        cmd = _cmd(dataset, out, work, tiny_checkpoint, "01")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 74, proc.stderr[-3000:]
        assert lines[-1].startswith("bids_usb: error: ") and str(fs.path) in lines[-1], lines[-1]
        assert "space" in lines[-1].lower(), lines[-1]
        assert _partial_files(out) == [], "a partial output was left behind"

        fs.resize("512m")
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert any(out.rglob("*_desc-healed_T1w.nii.gz"))
        assert _partial_files(out) == []
    finally:
        fs.unmount()


def test_a_second_identical_run_is_refused_at_once_and_the_first_finishes(dataset, tiny_checkpoint, tmp_path):
    """Two identical commands at once (same output and work directory): the second ends with 73
    and one line within seconds, the first is not disturbed."""
    cmd = _cmd(dataset, tmp_path / "out", tmp_path / "work", tiny_checkpoint, "01")
    first = _start(cmd)
    _wait_for((tmp_path / "work", "bids_usb_wf/*/prepare"), first)  # the first holds its lock and runs nodes
    started = time.monotonic()
    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert second.returncode == 73, second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1].startswith("bids_usb: error: ")
    assert "another bids_usb run" in second.stderr
    assert time.monotonic() - started < 60
    assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
