"""The README's lesion-mask layouts, read from the README itself: each validates and runs as written.

Every ``<!-- layout: NAME -->`` block of README.md lists files (a path, then the JSON the file
holds) and is followed by the command that uses them. The test writes the files under a
temporary ``/data`` (NIfTI files from one synthetic participant: its T1w, and its lesion mask
for every ``_mask``/``_roi``), validates every dataset in the layout, and runs the command's
participant level through the CLI up to the workflow (validation with the app's expected mask
names, discovery, every per-image check), asserting that each image found its mask and that
the input was not touched. The first layout also runs to the end, in a process of its own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_usb import run as run_module
from bids_usb.cli import main
from bids_usb.discovery import RAW_MASK_GLOBS
from bids_usb.validation import assert_valid_bids, find_validator
from usb_model.synth.bids_writer import write_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- layout: (\S+) -->\s*```text\n(.*?)```\s*```bash\n(.*?)```", re.S)

pytestmark = pytest.mark.skipif(find_validator() is None, reason="bids-validator-deno not installed")


def _layouts() -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
    out = {}
    for name, files, command in BLOCK.findall(README.read_text()):
        listed = []
        for line in files.strip().splitlines():
            path, _, content = line.strip().partition(" ")
            listed.append((path, content.strip()))
        out[name] = (listed, shlex.split(command.strip()))
    return out


LAYOUTS = _layouts()


def test_the_readme_shows_the_three_layouts_derivatives_first():
    assert list(LAYOUTS) == ["derivatives", "raw-roi", "atlas"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """One synthetic participant: a T1w and its lesion mask on the T1w's grid."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, participants=1, seed=5, n_healthy=0, voxel_size=(1.5, 1.5, 1.5))
    anat = root / "sub-01" / "anat"
    return anat / "sub-01_T1w.nii.gz", anat / "sub-01_label-lesion_roi.nii.gz"


def _write(layout: str, data: Path, source) -> list[str]:
    """Write the layout's files under ``data``; returns the command with ``/data`` replaced."""
    t1w, mask = source
    files, command = LAYOUTS[layout]
    for path, content in files:
        target = data / Path(path).relative_to("/data")
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".json"):
            target.write_text(json.dumps(json.loads(content)))
        elif path.endswith(("_mask.nii.gz", "_roi.nii.gz")):
            shutil.copy(mask, target)
        else:
            shutil.copy(t1w, target)
    assert command[0] == "bids_usb"
    return [str(data / Path(a).relative_to("/data")) if a.startswith("/data/") else a for a in command[1:]]


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_validates_and_runs_up_to_the_workflow(layout, source, tmp_path, tiny_checkpoint, monkeypatch):
    data = tmp_path / "data"
    args = _write(layout, data, source)
    bids_dir = Path(args[0])
    masks_dir = Path(args[args.index("--lesion-masks") + 1]) if "--lesion-masks" in args else None
    # Every dataset of the layout validates as the app validates it: the raw-dataset masks it
    # reads are expected files; a derivatives dataset needs nothing.
    assert assert_valid_bids(bids_dir, expected=RAW_MASK_GLOBS) == []
    if masks_dir is not None:
        assert assert_valid_bids(masks_dir) == []
    if layout == "raw-roi":  # what the app's expected names stand in for
        assert assert_valid_bids(bids_dir) == ["NOT_INCLUDED /sub-01/anat/sub-01_label-lesion_roi.nii.gz"]

    seen = {}

    def stop_before_the_workflow(jobs, failures, *rest):
        seen["jobs"], seen["failures"] = jobs, failures
        return 0

    monkeypatch.setattr(run_module, "_run_jobs", stop_before_the_workflow)
    before = _snapshot(data)
    code = main([*args, "--model", str(tiny_checkpoint), "-w", str(tmp_path / "work")])
    assert code == 0 and seen["failures"] == []
    images = sorted(p for p, _ in LAYOUTS[layout][0] if p.endswith("_T1w.nii.gz"))
    masks = sorted(p for p, _ in LAYOUTS[layout][0] if p.endswith(("_mask.nii.gz", "_roi.nii.gz")))
    assert sorted(str(j.anat) for j in seen["jobs"]) == [str(data / Path(p).relative_to("/data")) for p in images]
    assert [str(j.lesion_mask) for j in seen["jobs"]] == [str(data / Path(p).relative_to("/data")) for p in masks]
    after = _snapshot(data)
    assert {k: v for k, v in after.items() if k in before} == before  # the inputs are untouched
    assert not [k for k in after if k not in before and not k.startswith("derivatives/usb/")]


@pytest.mark.slow
def test_the_first_layout_runs_to_the_end(source, tmp_path, tiny_checkpoint):
    """A process of its own, as a user runs it (and as test_participant does: nipype's workers
    must not fork a process whose torch threads are already running)."""
    data = tmp_path / "data"
    args = _write("derivatives", data, source)
    cmd = [sys.executable, "-m", "bids_usb", *args, "--model", str(tiny_checkpoint), "-w", str(tmp_path / "work")]
    cmd += ["--steps", "2", "--n-samples", "1", "--nprocs", "2", "--omp-nthreads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = Path(args[1])
    assert (out / "sub-01" / "anat" / "sub-01_desc-healed_T1w.nii.gz").is_file()
    assert (out / "sub-01" / "anat" / "sub-01_desc-lesion_mask.nii.gz").is_file()
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_desc-healed_T1w.json").read_text())
    assert sidecar["USB"]["Model"]["Template"]["Source"] == "nilearn"  # the tiny model's own copy
    assert assert_valid_bids(out) == []
