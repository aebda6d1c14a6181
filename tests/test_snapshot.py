"""Training snapshots: small enough to commit, and a resume from one continues the same run."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import toy_triplets

from usb_model import train as T
from usb_model.config import load_preset
from usb_model.train import losses as train_losses
from usb_model.train import snapshot


@pytest.fixture(autouse=True)
def _quiet_perceptual(monkeypatch):
    monkeypatch.setattr(train_losses, "build_perceptual", lambda *a, **k: None)


@pytest.fixture(scope="module")
def cfg():
    return load_preset("tiny")


def size(directory) -> int:
    return sum(p.stat().st_size for p in directory.iterdir())


def test_autoencoder_snapshot_drops_what_a_resume_rebuilds_and_resumes_close(tmp_path, cfg):
    data = toy_triplets(4)
    full = T.train_all(cfg, data, tmp_path / "full", {"autoencoder": 4}, save_every=10)
    T.train_all(cfg, data, tmp_path / "cut", {"autoencoder": 2}, save_every=10)
    info = snapshot.pack(tmp_path / "cut", tmp_path / "snap")
    assert {"networks.lesion", "networks.brain", "ema.lesion", "ema.brain"} <= set(info["dropped"])
    assert size(tmp_path / "snap") < 0.5 * size(tmp_path / "cut" / "state")
    assert json.loads((tmp_path / "snap" / "snapshot.json").read_text())["progress"]["autoencoder"] == 2

    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    resumed = T.train_all(cfg, data, tmp_path / "resumed", {"autoencoder": 4}, resume=True, save_every=10)
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(full.autoencoder.state_dict().values(), resumed.autoencoder.state_dict().values())
    ]
    assert max(diffs) < 1e-2  # half-precision rounding once, then the same two steps
    # the untrained denoisers are the seed's, as in the uninterrupted run
    for a, b in zip(full.brain.state_dict().values(), resumed.brain.state_dict().values()):
        assert torch.equal(a, b)
    rows = (tmp_path / "resumed" / "log.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[1]) for r in rows] == [2, 4]  # the log came with the snapshot


def test_lesion_stage_snapshot_keeps_the_autoencoder_and_resumes_the_lesion_net(tmp_path, cfg):
    data = toy_triplets(4)
    steps = {"autoencoder": 2, "lesion": 2}
    T.train_all(cfg, data, tmp_path / "cut", steps, save_every=10)
    info = snapshot.pack(tmp_path / "cut", tmp_path / "snap")
    assert "optimizers.autoencoder" in info["dropped"] and "networks.lesion" not in info["dropped"]
    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    original = T.train_all(cfg, data, tmp_path / "cut", {"lesion": 4}, resume=True, save_every=10)
    resumed = T.train_all(cfg, data, tmp_path / "resumed", {"lesion": 4}, resume=True, save_every=10)
    for a, b in zip(original.autoencoder.state_dict().values(), resumed.autoencoder.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)  # float16 weights
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(original.lesion.state_dict().values(), resumed.lesion.state_dict().values())
    ]
    assert max(diffs) < 2e-2


def test_unpack_refuses_what_is_not_a_snapshot(tmp_path):
    (tmp_path / "snapshot.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a training snapshot"):
        snapshot.unpack(tmp_path, tmp_path / "run")


def test_frozen_parts_are_the_same_file_from_one_pack_to_the_next(tmp_path, cfg):
    """What a stage no longer trains is written byte for byte again, so git stores it once."""
    data = toy_triplets(4)
    T.train_all(cfg, data, tmp_path / "run", {"autoencoder": 2, "lesion": 1}, save_every=10)
    first = snapshot.pack(tmp_path / "run", tmp_path / "snap1")
    T.train_all(cfg, data, tmp_path / "run", {"lesion": 3}, resume=True, save_every=10)
    snapshot.pack(tmp_path / "run", tmp_path / "snap2")
    assert "networks.autoencoder" in first["parts"] and "networks.lesion" in first["parts"]
    assert first["dropped_first_moments"] > 0

    def blob(snap, part):
        return (tmp_path / snap / f"trainer.{part}.safetensors").read_bytes()

    assert blob("snap1", "networks.autoencoder") == blob("snap2", "networks.autoencoder")
    assert blob("snap1", "networks.lesion") != blob("snap2", "networks.lesion")
    state = snapshot.load_state(tmp_path / "snap2", "trainer.optimizers.lesion")
    moments = [entry for entry in state["value"].values()]
    assert moments and all("exp_avg" not in e or e["exp_avg"] is None for e in moments)


def test_a_resume_restarts_adams_first_moment_at_zero_and_keeps_the_second(tmp_path, cfg):
    data = toy_triplets(4)
    T.train_all(cfg, data, tmp_path / "run", {"autoencoder": 2, "lesion": 2}, save_every=10)
    snapshot.pack(tmp_path / "run", tmp_path / "snap")
    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    original = snapshot.load_state(tmp_path / "run" / "state", "trainer")["optimizers"]["lesion"]["state"]
    resumed = snapshot.load_state(tmp_path / "resumed" / "state", "trainer")["optimizers"]["lesion"]["state"]
    assert original.keys() == resumed.keys()
    for key, entry in resumed.items():
        assert not entry["exp_avg"].any()
        torch.testing.assert_close(entry["exp_avg_sq"], original[key]["exp_avg_sq"], rtol=1e-2, atol=0)
        assert float(entry["step"]) == float(original[key]["step"])


def test_a_snapshot_of_the_first_format_still_unpacks(tmp_path, cfg):
    """Format /1 (one file, first moments kept) is what the campaign committed until 2026-12-05."""
    data = toy_triplets(4)
    T.train_all(cfg, data, tmp_path / "run", {"autoencoder": 2}, save_every=10)
    state = snapshot.load_state(tmp_path / "run" / "state", "trainer")
    old = tmp_path / "old"
    old.mkdir()
    snapshot.save_state(snapshot._cast(state), old, "trainer")
    (old / "snapshot.json").write_text(json.dumps({"format": "usb-train-snapshot/1", "dropped": []}))
    snapshot.unpack(old, tmp_path / "resumed")
    resumed = snapshot.load_state(tmp_path / "resumed" / "state", "trainer")
    for key, value in state["networks"].items():
        if isinstance(value, torch.Tensor) and key.startswith("autoencoder."):
            torch.testing.assert_close(resumed["networks"][key], value, atol=2e-3, rtol=2e-3)
