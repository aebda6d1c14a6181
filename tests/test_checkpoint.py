import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from usb_model.checkpoint import (
    CheckpointError,
    checkpoint_directory,
    checkpoint_sha256,
    load_checkpoint,
    load_state,
    read_meta,
    save_checkpoint,
    save_state,
)
from usb_model.tasks import USB


def test_round_trip_reproduces_outputs_exactly(tiny_networks, tmp_path):
    tiny_networks.latent_scale.fill_(0.7)
    save_checkpoint(tiny_networks, tmp_path / "ckpt", training_data={"source": "test"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "meta.json", "model.safetensors"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert float(loaded.latent_scale) == pytest.approx(0.7)
    assert read_meta(tmp_path / "ckpt")["training_data"] == {"source": "test"}
    brain = torch.rand(32, 32, 32, generator=torch.Generator().manual_seed(0))
    a = USB(tiny_networks, "cpu").heal(brain, mode="acg", seed=1, stride=100).image
    b = USB(loaded, "cpu").heal(brain, mode="acg", seed=1, stride=100).image
    assert torch.equal(a, b)
    assert len(checkpoint_sha256(tmp_path / "ckpt")) == 64


def test_a_training_directory_names_its_checkpoint(tiny_networks, tmp_path):
    """usb-train's output directory and the checkpoint inside it name the same model."""
    save_checkpoint(tiny_networks, tmp_path / "run" / "checkpoint")
    assert checkpoint_directory(tmp_path / "run") == tmp_path / "run" / "checkpoint"
    assert checkpoint_directory(tmp_path / "run" / "checkpoint") == tmp_path / "run" / "checkpoint"
    assert checkpoint_directory(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_missing_and_misshapen_tensors_are_named(tiny_networks, tmp_path):
    ckpt = save_checkpoint(tiny_networks, tmp_path / "ckpt")
    tensors = load_file(str(ckpt / "model.safetensors"))
    name = "brain.conv_in.conv.weight"
    assert name in tensors
    broken = dict(tensors)
    del broken[name]
    save_file(broken, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(ckpt)
    broken = dict(tensors)
    broken[name] = torch.zeros(1, 2, 3)
    save_file(broken, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(ckpt)


def test_missing_or_corrupt_checkpoints(tiny_networks, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    ckpt = save_checkpoint(tiny_networks, tmp_path / "ckpt")
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(ckpt)


def test_nested_state_round_trip_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "step": 5, "stage": "brain"}
    save_state(state, tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())  # plain JSON
    again = load_state(tmp_path)
    assert again["step"] == 5 and again["stage"] == "brain"
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(again["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
