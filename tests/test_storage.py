"""Inputs as storage holds them: files that are symlinks (to a shared store outside the dataset,
or DataLad's relative links into ``.git/annex/objects``) are read through their links and named
as the dataset names them, never by their targets; and the free-space estimate."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_usb.derivatives import bids_uri
from bids_usb.storage import absent_content, dataset_path, is_disk_full, needed_mb, warn_if_short
from usb_model.synth.bids_writer import write_dataset

T1W = "sub-01/anat/sub-01_T1w.nii.gz"


def _annex(bids: Path, rel: str) -> Path:
    """Move ``rel``'s content into ``.git/annex/objects`` and leave a relative link, as git-annex does."""
    path = bids / rel
    key = f"SHA256E-s{path.stat().st_size}--{path.name}"
    obj = bids / ".git" / "annex" / "objects" / "Ab" / "cD" / key / key
    obj.parent.mkdir(parents=True)
    shutil.move(path, obj)
    path.symlink_to(os.path.relpath(obj, path.parent))
    return obj


def _to_store(bids: Path, rel: str, store: Path) -> Path:
    """Move ``rel`` to a store outside the dataset and leave an absolute link (a cluster's shared store)."""
    path = bids / rel
    target = store / rel.replace("/", "_")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    path.symlink_to(target)
    return target


def test_uris_name_the_dataset_path_not_the_link_target(tmp_path):
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / T1W).write_bytes(b"x" * 2000)
    _annex(bids, T1W)
    assert bids_uri("raw", bids, bids / T1W) == f"bids:raw:{T1W}"
    (bids / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz").write_bytes(b"y" * 2000)
    _to_store(bids, "sub-01/anat/sub-01_FLAIR.nii.gz", tmp_path / "store")
    assert bids_uri("raw", bids, bids / "sub-01/anat/sub-01_FLAIR.nii.gz") == "bids:raw:sub-01/anat/sub-01_FLAIR.nii.gz"
    # The dataset itself reached through a link, the file through the real path (or the reverse).
    (tmp_path / "alias").symlink_to(bids)
    assert str(dataset_path(tmp_path / "alias", bids.resolve() / T1W)) == T1W
    assert str(dataset_path(bids.resolve(), tmp_path / "alias" / T1W)) == T1W
    with pytest.raises(ValueError):
        dataset_path(bids, tmp_path / "store" / "elsewhere.nii.gz")


def test_absent_content_tells_a_dangling_link_and_an_annex_pointer(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.symlink_to(tmp_path / "gone.nii.gz")
    assert "does not exist" in absent_content(broken)
    annexed = tmp_path / "annexed.nii.gz"
    annexed.symlink_to("../.git/annex/objects/Ab/cD/KEY/KEY")
    assert "annexed" in absent_content(annexed)
    pointer = tmp_path / "pointer.nii.gz"
    pointer.write_bytes(b"/annex/objects/SHA256E-s1234--abc.nii.gz\n")
    assert "pointer" in absent_content(pointer)
    plain = tmp_path / "plain.nii.gz"
    plain.write_bytes(b"\x1f\x8b" + b"0" * 100)
    assert absent_content(plain) is None


def test_free_space_warning_and_disk_full_detection(tmp_path):
    assert warn_if_short([tmp_path], 1e12) and "MB free" in warn_if_short([tmp_path], 1e12)[0]
    assert warn_if_short([tmp_path, tmp_path / "not" / "yet"], 0.0) == []
    assert needed_mb([167 * 207 * 180]) == pytest.approx(38.0)
    wrapped = RuntimeError("node failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped) and not is_disk_full(RuntimeError("other"))


def _run(bids: Path, out: Path, work: Path, model: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bids_usb", str(bids), str(out), "participant", "--model", str(model)]
    cmd += ["-w", str(work), "--steps", "2", "--nprocs", "2", "--omp-nthreads", "1", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _files(root: Path) -> dict[str, bytes]:
    skip = {".html", ".svg", ".png"}  # reports embed the run's paths and times
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix not in skip and p.name != "dataset_description.json"
    }


@pytest.mark.slow
def test_a_dataset_of_symlinks_runs_to_the_same_outputs_as_plain_files(tmp_path, tiny_checkpoint):
    plain = tmp_path / "plain"
    write_dataset(plain, participants=1, seed=5, n_healthy=0, voxel_size=(2.0, 2.0, 2.0))
    linked = tmp_path / "linked"
    shutil.copytree(plain, linked)
    mask = next(p for p in (linked / "sub-01" / "anat").iterdir() if "lesion" in p.name and p.suffix == ".gz")
    _to_store(linked, T1W, tmp_path / "store")  # outside the dataset: an absolute link
    _annex(linked, str(mask.relative_to(linked)))  # DataLad: a relative link into .git/annex
    assert (linked / T1W).is_symlink() and mask.is_symlink()

    runs = {}
    for name, bids in (("plain", plain), ("linked", linked)):
        proc = _run(bids, tmp_path / f"out-{name}", tmp_path / f"work-{name}", tiny_checkpoint)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = _files(tmp_path / f"out-{name}")
    assert runs["linked"].keys() == runs["plain"].keys()
    differ = [name for name in runs["plain"] if runs["plain"][name] != runs["linked"][name]]
    assert differ == [], f"outputs differ between links and plain files: {differ}"
    sidecar = json.loads(runs["linked"][next(n for n in runs["linked"] if n.endswith("desc-healed_T1w.json"))])
    assert f"bids:raw:{T1W}" in sidecar["Sources"]
    assert not any("annex" in s or "store" in s for s in sidecar["Sources"]), sidecar["Sources"]
