"""Fine-tuning a finished model: the lesion stage again, on lesioned items only, from a checkpoint.

The campaign's lesion net learnt "no lesion" from its healthy items so well that paired sampling
drew an empty mask 11 times in 16; the fix is a second lesion stage on lesioned items only,
started from the finished checkpoint (``usb-train --init-checkpoint``), with every other network
kept as it was.
"""

from __future__ import annotations

import dataclasses
import json

import click
import pytest
import torch
from test_train import toy_triplets

from usb_model import train as T
from usb_model.checkpoint import checkpoint_sha256, load_checkpoint
from usb_model.config import USBConfig, load_preset
from usb_model.train import losses as train_losses
from usb_model.train import snapshot
from usb_model.train import trainer as trainer_module
from usb_model.train.cli import networks_from_checkpoint


@pytest.fixture(autouse=True)
def _quiet_perceptual(monkeypatch):
    monkeypatch.setattr(train_losses, "build_perceptual", lambda *a, **k: None)


def with_training(cfg: USBConfig, **changes) -> USBConfig:
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes))


def record_lesion_batches(monkeypatch) -> list[torch.Tensor]:
    """The mask latents x0 every lesion step trains on."""
    seen: list[torch.Tensor] = []
    real = trainer_module.lesion_loss

    def spy(net, diffusion, x0, *args, **kwargs):
        seen.append(x0.detach().clone())
        return real(net, diffusion, x0, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "lesion_loss", spy)
    return seen


def empty_rows(batches: list[torch.Tensor], networks) -> int:
    """How many trained rows are the latent of an all-zero mask."""
    with torch.no_grad():
        empty = networks.encode(torch.zeros((1, 1, *networks.cfg.grid.shape)))
    return sum(int(((x - empty).abs().flatten(1).amax(dim=1) < 0.02).sum()) for x in batches)


@pytest.mark.parametrize("latent_cache", [0, 4])
def test_lesion_stage_without_healthy_items_trains_on_lesioned_rows_only(tmp_path, monkeypatch, latent_cache):
    data = toy_triplets(8, healthy_every=2)  # half the items healthy
    counts = {}
    for keep in (True, False):
        cfg = with_training(load_preset("tiny"), batch_size=4, latent_cache=latent_cache, lesion_healthy_items=keep)
        seen = record_lesion_batches(monkeypatch)
        nets = T.train_all(cfg, data, tmp_path / str(keep), {"autoencoder": 1, "lesion": 6}, save_every=10)
        counts[keep] = (empty_rows(seen, nets), sum(len(x) for x in seen))
        monkeypatch.undo()
        monkeypatch.setattr(train_losses, "build_perceptual", lambda *a, **k: None)
    healthy_kept, rows_kept = counts[True]
    healthy_dropped, rows_dropped = counts[False]
    assert healthy_kept > 0 and rows_kept == 6 * 4  # the paper's mix: healthy rows are trained on
    assert healthy_dropped == 0 and 0 < rows_dropped < rows_kept


def finished_model(tmp_path, cfg, data, steps):
    """A tiny finished checkpoint to fine-tune from: its directory and its networks."""
    T.train_all(cfg, data, tmp_path / "first", steps, save_every=10)
    source_dir = tmp_path / "first" / "checkpoint"
    return source_dir, load_checkpoint(source_dir)


def test_a_fine_tune_starts_from_the_checkpoint_and_keeps_what_it_does_not_train(tmp_path):
    cfg = load_preset("tiny")
    data = toy_triplets(8)
    source_dir, source = finished_model(tmp_path, cfg, data, {"autoencoder": 2, "lesion": 2, "brain": 2})

    tuned_cfg = with_training(cfg, lesion_healthy_items=False, diffusion_lr=1e-3)
    networks, lineage = networks_from_checkpoint(tuned_cfg, source_dir)
    assert lineage["model_sha256"] == checkpoint_sha256(source_dir)
    assert lineage["trained_steps"] == {"autoencoder": 2, "lesion": 2, "brain": 2}
    run = tmp_path / "tuned"
    T.train_all(tuned_cfg, data, run, {"lesion": 2}, networks=networks, initialised_from=lineage, save_every=1)
    tuned = load_checkpoint(run / "checkpoint")

    assert float(tuned.latent_scale) == float(source.latent_scale)  # kept, not recomputed
    for part in ("autoencoder", "brain"):
        for key, value in getattr(source, part).state_dict().items():
            assert torch.equal(getattr(tuned, part).state_dict()[key], value), (part, key)
    assert any(not torch.equal(a, b) for a, b in zip(source.lesion.parameters(), tuned.lesion.parameters()))
    notes = json.loads((run / "checkpoint" / "meta.json").read_text())["notes"]
    assert notes["initialised_from"]["model_sha256"] == lineage["model_sha256"]
    assert notes["lesion_healthy_items"] is False

    # A snapshot of the fine-tune keeps the checkpoint's untrained brain net: the seed cannot
    # rebuild it. A resume from it goes on from there.
    info = snapshot.pack(run, tmp_path / "snap")
    assert "networks.brain" not in info["dropped"] and "ema.brain" not in info["dropped"]
    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    resumed = T.train_all(tuned_cfg, data, tmp_path / "resumed", {"lesion": 3}, resume=True, save_every=10)
    for key, value in source.brain.state_dict().items():
        torch.testing.assert_close(resumed.brain.state_dict()[key], value, atol=2e-3, rtol=2e-3)  # float16
    notes = json.loads((tmp_path / "resumed" / "checkpoint" / "meta.json").read_text())["notes"]
    assert notes["initialised_from"]["model_sha256"] == lineage["model_sha256"]


def test_a_checkpoint_of_other_networks_is_refused_by_name(tmp_path):
    cfg = load_preset("tiny")
    T.train_all(cfg, toy_triplets(4), tmp_path / "first", {"autoencoder": 1}, save_every=10)
    wider = dataclasses.replace(cfg, denoiser=dataclasses.replace(cfg.denoiser, channels=(16, 32, 64)))
    with pytest.raises(click.ClickException, match="init-checkpoint .*first/checkpoint"):
        networks_from_checkpoint(wider, tmp_path / "first")


def test_timestep_focus_reaches_the_brain_stage(tmp_path, monkeypatch):
    """training.timestep_focus 1.0 below 64: every brain step trains on t < 64 (the fine-tune of
    the range healing and detection run in); without it, the draws cover the whole schedule."""
    seen: list[torch.Tensor] = []
    real = trainer_module.brain_loss

    def spy(net, y_t, condition, t, *args, **kwargs):
        seen.append(t.detach().clone())
        return real(net, y_t, condition, t, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "brain_loss", spy)
    data = toy_triplets(8)
    for focus in (1.0, 0.0):
        cfg = with_training(load_preset("tiny"), batch_size=4, timestep_focus=focus, timestep_focus_max=64)
        seen.clear()
        T.train_all(cfg, data, tmp_path / str(focus), {"autoencoder": 1, "lesion": 1, "brain": 8}, save_every=10)
        drawn = torch.cat(seen)
        assert len(drawn) == 8 * 4
        if focus:
            assert int(drawn.max()) < 64
        else:
            assert int(drawn.max()) >= 64


def test_a_decoder_fine_tune_keeps_the_latent_space_the_denoisers_learnt(tmp_path):
    """training.vae_train_encoder false: the autoencoder stage of a fine-tune trains the decoder
    alone, so every latent (and the denoisers trained on them) stays valid."""
    cfg = load_preset("tiny")
    data = toy_triplets(8)
    source_dir, source = finished_model(tmp_path, cfg, data, {"autoencoder": 2, "lesion": 1, "brain": 1})

    tuned_cfg = with_training(cfg, vae_train_encoder=False, vae_lr=1e-2)
    networks, lineage = networks_from_checkpoint(tuned_cfg, source_dir)
    run = tmp_path / "decoder"
    T.train_all(tuned_cfg, data, run, {"autoencoder": 3}, networks=networks, initialised_from=lineage, save_every=10)
    tuned = load_checkpoint(run / "checkpoint")

    volume = data[0]["lesioned"][None]
    with torch.no_grad():
        torch.testing.assert_close(tuned.encode(volume), source.encode(volume), atol=0, rtol=0)
        assert not torch.equal(tuned.decode(source.encode(volume)), source.decode(source.encode(volume)))
    decoder = {k: v for k, v in source.autoencoder.state_dict().items() if k.startswith("decoder.")}
    assert any(not torch.equal(tuned.autoencoder.state_dict()[k], v) for k, v in decoder.items())
    for part in ("lesion", "brain"):
        for key, value in getattr(source, part).state_dict().items():
            assert torch.equal(getattr(tuned, part).state_dict()[key], value), (part, key)
    assert float(tuned.latent_scale) == float(source.latent_scale)


def autoencoder_weights(state_part: dict) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in state_part.items()}


def test_an_autoencoder_ema_is_what_the_checkpoint_holds_and_what_the_denoisers_train_on(tmp_path):
    """training.vae_ema_decay: the checkpoint's autoencoder is the EMA of its online weights, and
    once the denoiser stages start the online autoencoder becomes that EMA (their latents are the
    checkpoint's), after which the state no longer carries a separate copy."""
    cfg = with_training(load_preset("tiny"), vae_ema_decay=0.9, vae_lr=1e-2)
    data = toy_triplets(4)
    run = tmp_path / "run"
    T.train_all(cfg, data, run, {"autoencoder": 3}, save_every=10)
    state = trainer_module.load_state(run / "state", "trainer")
    online = {k[len("autoencoder.") :]: v for k, v in state["networks"].items() if k.startswith("autoencoder.")}
    ema = state["ema"]["autoencoder"]["weights"]
    assert state["ema"]["autoencoder"]["updates"] == 3
    saved = load_checkpoint(run / "checkpoint").autoencoder.state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], online[k]) for k in ema)  # the EMA lags the online weights
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["notes"]["autoencoder_weights"].startswith("EMA")

    T.train_all(cfg, data, run, {"autoencoder": 3, "lesion": 1}, resume=True, save_every=10)
    state = trainer_module.load_state(run / "state", "trainer")
    assert "autoencoder" not in state["ema"]
    adopted = {k[len("autoencoder.") :]: v for k, v in state["networks"].items() if k.startswith("autoencoder.")}
    assert all(torch.equal(adopted[k], ema[k]) for k in ema)
    saved = load_checkpoint(run / "checkpoint").autoencoder.state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in ema)


def test_an_autoencoder_ema_switched_on_in_a_resumed_run_starts_at_its_online_weights(tmp_path):
    """The campaign's decoder phases resume states written without one: the EMA starts at the
    resumed weights, and its first update (warm-up decay 0.1) is 0.1 of those and 0.9 of the next."""
    cfg = with_training(load_preset("tiny"), vae_lr=1e-2)
    data = toy_triplets(4)
    run = tmp_path / "run"
    T.train_all(cfg, data, run, {"autoencoder": 2}, save_every=10)
    before = trainer_module.load_state(run / "state", "trainer")["networks"]
    T.train_all(with_training(cfg, vae_ema_decay=0.999), data, run, {"autoencoder": 3}, resume=True, save_every=10)
    state = trainer_module.load_state(run / "state", "trainer")
    after, ema = state["networks"], state["ema"]["autoencoder"]
    assert ema["updates"] == 1
    for key, value in ema["weights"].items():
        expected = 0.1 * before[f"autoencoder.{key}"] + 0.9 * after[f"autoencoder.{key}"]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)

    info = snapshot.pack(run, tmp_path / "snap")  # a snapshot keeps the EMA while its stage runs
    assert "ema.autoencoder" in info["parts"]
    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    resumed = trainer_module.load_state(tmp_path / "resumed" / "state", "trainer")["ema"]["autoencoder"]
    assert resumed["updates"] == 1
    for key, value in ema["weights"].items():
        torch.testing.assert_close(resumed["weights"][key], value, rtol=1e-2, atol=1e-3)  # half precision


def encoder_drift(networks, reference, data) -> float:
    """Mean squared difference of two autoencoders' scaled latents over the items."""
    with torch.no_grad():
        return float(
            sum(
                ((networks.encode(d["lesioned"][None]) - reference.encode(d["lesioned"][None])) ** 2).mean()
                for d in data
            )
            / len(data)
        )


def test_a_latent_anchor_holds_a_trained_encoder_near_the_latents_the_run_started_from(tmp_path):
    """training.vae_latent_anchor: an encoder trained on a finished model stays near its latents
    (the denoisers' space), by as much as the weight asks; the anchor is the run's start, kept in
    the state and the snapshot, so a resume anchors to the same latents."""
    cfg = load_preset("tiny")
    data = toy_triplets(8)
    source_dir, source = finished_model(tmp_path, cfg, data, {"autoencoder": 2, "lesion": 1, "brain": 1})
    drifts = {}
    for weight in (0.0, 100.0):
        tuned_cfg = with_training(cfg, vae_lr=3e-2, vae_latent_anchor=weight)
        networks, lineage = networks_from_checkpoint(tuned_cfg, source_dir)
        run = tmp_path / f"anchor{weight}"
        tuned = T.train_all(
            tuned_cfg, data, run, {"autoencoder": 4}, networks=networks, initialised_from=lineage, save_every=10
        )
        drifts[weight] = encoder_drift(tuned, source, data)
    assert 0 < drifts[100.0] < 0.5 * drifts[0.0]
    rows = T.read_log(tmp_path / "anchor100.0" / "log.tsv")
    assert all(r["anchor"] is not None and r["anchor"] >= 0 for r in rows)

    # Resumed (through a snapshot), the anchor is still the source's autoencoder.
    snapshot.pack(tmp_path / "anchor100.0", tmp_path / "snap")
    assert "anchor" in json.loads((tmp_path / "snap" / "snapshot.json").read_text())["parts"]
    snapshot.unpack(tmp_path / "snap", tmp_path / "resumed")
    state = trainer_module.load_state(tmp_path / "resumed" / "state", "trainer")
    for key, value in source.autoencoder.state_dict().items():
        torch.testing.assert_close(state["anchor"]["weights"][key], value, rtol=1e-2, atol=1e-3)  # half precision
    resumed_cfg = with_training(cfg, vae_lr=3e-2, vae_latent_anchor=100.0)
    T.train_all(resumed_cfg, data, tmp_path / "resumed", {"autoencoder": 5}, resume=True, save_every=10)
    state = trainer_module.load_state(tmp_path / "resumed" / "state", "trainer")
    for key, value in source.autoencoder.state_dict().items():
        torch.testing.assert_close(state["anchor"]["weights"][key], value, rtol=1e-2, atol=1e-3)
    # Once a denoiser stage starts nothing trains the encoder: the anchor leaves the state.
    T.train_all(resumed_cfg, data, tmp_path / "resumed", {"autoencoder": 5, "lesion": 1}, resume=True, save_every=10)
    assert "anchor" not in trainer_module.load_state(tmp_path / "resumed" / "state", "trainer")


def test_a_log_begun_before_a_new_column_keeps_its_columns(tmp_path):
    from usb_model.train.log import append_log, truncate_log

    log = tmp_path / "log.tsv"
    old = ("stage", "step", "loss", "recon", "kl", "adv", "perceptual", "disc", "lr", "seconds")
    log.write_text("\t".join(old) + "\n" + "\t".join(["autoencoder", "10"] + ["0.5"] * 8) + "\n")
    append_log(log, {"stage": "autoencoder", "step": 20, "loss": 0.25, "anchor": 0.1, "lr": 1e-4, "seconds": 2.0})
    lines = log.read_text().splitlines()
    assert lines[0].split("\t") == list(old) and len(lines[2].split("\t")) == len(old)
    truncate_log(log, {"autoencoder": 20, "lesion": 0, "brain": 0})
    rows = T.read_log(log)
    assert [r["step"] for r in rows] == [10, 20] and rows[1]["loss"] == 0.25
