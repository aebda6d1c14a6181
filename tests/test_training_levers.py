"""The levers that cut training compute: v-prediction, min-SNR-gamma weighting, cached latents.

Each must leave everything downstream of the denoisers (DDIM, ACG/LCG, the lesion net's
condition, the fill change) computing the same thing whatever the prediction type, and the
cache must hold exactly what the encoder gives, mirrors included.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_train import toy_triplets
from torch import nn

from usb_model import train as T
from usb_model.config import USBConfig, load_preset
from usb_model.diffusion import Diffusion
from usb_model.networks import USBNetworks
from usb_model.tasks import USB
from usb_model.train import latents
from usb_model.train import losses as train_losses

GRID = (32, 32, 32)


def with_sections(cfg: USBConfig, **changes) -> USBConfig:
    data = cfg.to_dict()
    for section, values in changes.items():
        data[section].update(values)
    return USBConfig.from_dict(data)


@pytest.fixture(autouse=True)
def _quiet_perceptual(monkeypatch):
    monkeypatch.setattr(train_losses, "build_perceptual", lambda *a, **k: None)


@pytest.fixture(scope="module")
def v_cfg():
    return with_sections(load_preset("tiny"), schedule={"prediction_type": "v_prediction"})


def test_velocity_target_round_trips_to_the_noise_and_the_clean_latent(v_cfg):
    diffusion = Diffusion(v_cfg.schedule)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(4, 3, 4, 4, 4, generator=g), torch.randn(4, 3, 4, 4, 4, generator=g)
    t = torch.tensor([0, 200, 700, 1023])
    z_t = diffusion.add_noise(z0, eps, t)
    v = diffusion.target(z0, eps, t)
    a = diffusion.abar(t, z0)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * z0)
    torch.testing.assert_close(diffusion.to_eps(v, z_t, t), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(diffusion.predict_x0(z_t, diffusion.to_eps(v, z_t, t), t), z0, atol=1e-3, rtol=1e-3)
    eps_diffusion = Diffusion(load_preset("tiny").schedule)
    assert torch.equal(eps_diffusion.target(z0, eps, t), eps) and torch.equal(eps_diffusion.to_eps(eps, z_t, t), eps)


def test_unknown_prediction_type_is_refused():
    cfg = with_sections(load_preset("tiny"), schedule={"prediction_type": "sample"})
    with pytest.raises(ValueError, match="unknown prediction_type 'sample'"):
        Diffusion(cfg.schedule)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_clamp_the_x0_weighting_at_gamma(prediction_type):
    cfg = with_sections(load_preset("tiny"), schedule={"prediction_type": prediction_type})
    diffusion = Diffusion(cfg.schedule)
    t = torch.arange(0, 1024, 7)
    snr = diffusion.snr(t)
    weight = diffusion.loss_weight(t, 5.0)
    # The plain loss weighs the x0 error by SNR (eps) or SNR + 1 (v); min-SNR makes it min(SNR, 5).
    factor = snr if prediction_type == "epsilon" else snr + 1
    torch.testing.assert_close(weight * factor, snr.clamp(max=5.0))
    assert diffusion.loss_weight(t, 0.0) is None
    low_noise = snr > 5
    assert low_noise.any() and (weight[low_noise] < 1).all()


def test_weighted_losses_are_the_per_sample_weighted_means():
    pred, target = torch.zeros(2, 1, 2, 2, 2), torch.ones(2, 1, 2, 2, 2)
    target[1] *= 2
    assert train_losses.denoising_loss(pred, target).item() == pytest.approx(2.5)
    weight = torch.tensor([1.0, 0.25])
    assert train_losses.denoising_loss(pred, target, weight).item() == pytest.approx((1 + 0.25 * 4) / 2)


class VelocityFromNoise(nn.Module):
    """An eps denoiser re-expressed as a v denoiser: v = (eps - sqrt(1 - abar) z_t) / sqrt(abar)."""

    def __init__(self, net: nn.Module, diffusion: Diffusion, channels: int):
        super().__init__()
        self.net, self.diffusion, self.channels = net, diffusion, channels

    def forward(self, x, timesteps):
        z_t = x[:, : self.channels]
        a = self.diffusion.abar(timesteps, z_t)
        return (self.net(x, timesteps) - (1 - a).sqrt() * z_t) / a.sqrt()


@pytest.fixture(scope="module")
def paired_models(v_cfg):
    """The same denoisers as an eps model and as a v model: every task must agree between them."""
    torch.manual_seed(0)
    eps_nets = USBNetworks(load_preset("tiny")).eval()
    v_nets = USBNetworks(v_cfg).eval()
    v_nets.load_state_dict(eps_nets.state_dict())
    diffusion = Diffusion(v_cfg.schedule)
    c = v_cfg.autoencoder.latent_channels
    v_nets.lesion = VelocityFromNoise(v_nets.lesion, diffusion, c)
    v_nets.brain = VelocityFromNoise(v_nets.brain, diffusion, c)
    return USB(eps_nets, device="cpu"), USB(v_nets, device="cpu")


@pytest.fixture(scope="module")
def brain_and_lesion():
    g = torch.Generator().manual_seed(0)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in GRID], indexing="ij")
    brain = (((zz**2 + yy**2 + xx**2) < 0.7).float() * (0.6 + 0.2 * torch.rand(GRID, generator=g))).clamp(0, 1)
    lesion = torch.zeros(GRID)
    lesion[12:18, 10:16, 14:20] = 1
    return brain, lesion


@pytest.mark.parametrize(
    "task",
    ["heal_mask_residual", "heal_acg", "heal_detect", "embed", "generate_pairs", "generate_from_mask"],
)
def test_every_task_computes_the_same_under_either_prediction_type(paired_models, brain_and_lesion, task):
    eps_usb, v_usb = paired_models
    brain, lesion = brain_and_lesion

    def run(usb):
        if task == "heal_mask_residual":
            out = usb.heal(brain, lesion, seed=0, stride=50, fill="wm", fill_residual=True)
            return [out.image, out.fill_change]
        if task == "heal_acg":
            return [usb.heal(brain, mode="acg", seed=0, t_start=200, stride=50).image]
        if task == "heal_detect":
            out = usb.heal(brain, mode="detect", seed=0, stride=50, detect_threshold=0.0)
            return [out.image]
        if task == "embed":
            return [usb.embed(brain, lesion, seed=0, t_start=300, stride=50).image]
        if task == "generate_pairs":
            out = usb.generate_pairs(1, seed=0, steps=6)
            return [out.images, out.masks]
        return [usb.generate_from_mask(lesion, 1, seed=0, steps=6).images]

    for a, b in zip(run(eps_usb), run(v_usb), strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_trainer_runs_v_prediction_with_min_snr_on_cached_latents(tmp_path, v_cfg):
    cfg = with_sections(v_cfg, training={"latent_cache": 3, "min_snr_gamma": 5.0, "batch_size": 2})
    data = toy_triplets(6)
    T.train_all(cfg, data, tmp_path, {"autoencoder": 2, "lesion": 3, "brain": 3}, log_every=1, save_every=10)
    cache = latents.load_file(str(tmp_path / "latents" / "latents.safetensors"))
    assert {k: tuple(v.shape) for k, v in cache.items()} == {k: (6, *cfg.latent_shape) for k in latents.KEYS}
    rows = (tmp_path / "log.tsv").read_text().splitlines()
    assert sum(r.startswith("brain") for r in rows) == 3
    notes = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())["notes"]
    assert notes["prediction_type"] == "v_prediction" and notes["min_snr_gamma"] == 5.0
    assert json.loads((tmp_path / "latents" / "meta.json").read_text())["triplets"] == 3


def test_cache_holds_the_encoders_latents_and_their_mirrors_and_follows_the_autoencoder(tmp_path):
    cfg = load_preset("tiny")
    torch.manual_seed(0)
    nets = USBNetworks(cfg).eval()
    data = toy_triplets(3)
    cache, built = latents.load_or_build(tmp_path, nets, data, 3, 2, torch.device("cpu"))
    assert built and len(cache) == 6
    with torch.no_grad():
        first = nets.encode(data[0]["lesioned"][None])[0]
        mirrored = nets.encode(data[0]["lesioned"].flip(1)[None])[0]
    # batches of 2: item 0 then 1, their mirrors, then item 2 and its mirror
    torch.testing.assert_close(cache[0]["lesioned"], first, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cache[2]["lesioned"], mirrored, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(first, mirrored, atol=1e-2)
    _, rebuilt = latents.load_or_build(tmp_path, nets, data, 3, 2, torch.device("cpu"))
    assert not rebuilt
    with torch.no_grad():
        next(nets.autoencoder.parameters()).add_(0.01)
    _, rebuilt = latents.load_or_build(tmp_path, nets, data, 3, 2, torch.device("cpu"))
    assert rebuilt


def test_cached_training_resumes_exactly(tmp_path):
    cfg = with_sections(load_preset("tiny"), training={"latent_cache": 2, "batch_size": 2})
    data = toy_triplets(4)
    full = T.train_all(cfg, data, tmp_path / "full", {"autoencoder": 1, "lesion": 4}, save_every=10)
    T.train_all(cfg, data, tmp_path / "cut", {"autoencoder": 1, "lesion": 2}, save_every=10)
    resumed = T.train_all(cfg, data, tmp_path / "cut", {"lesion": 4}, resume=True, save_every=10)
    for (name, a), (_, b) in zip(full.lesion.state_dict().items(), resumed.lesion.state_dict().items()):
        assert torch.equal(a, b), name


def test_defaults_keep_the_papers_objective():
    cfg = USBConfig()
    assert cfg.schedule.prediction_type == "epsilon"
    assert cfg.training.min_snr_gamma == 0 and cfg.training.latent_cache == 0
    assert dataclasses.asdict(cfg.schedule)["prediction_type"] == "epsilon"
