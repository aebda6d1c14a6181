"""Training on the CPU with the tiny preset: losses fall, resume is exact, no pickle, latent scale,
the empty condition for healthy samples, and the stage plan's guards."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import IterableDataset

from usb_model import train as T
from usb_model.checkpoint import load_state
from usb_model.config import load_preset
from usb_model.diffusion import Diffusion, sample_timesteps
from usb_model.networks import USBNetworks
from usb_model.train import losses as train_losses

REAL_BUILD_PERCEPTUAL = T.build_perceptual


def toy_triplets(n: int = 8, grid=(32, 32, 32), seed: int = 0, healthy_every: int = 4) -> list[dict]:
    """Smooth 'brains' (a shaded ball) with a darker ball-shaped lesion; every 4th is healthy."""
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in grid], indexing="ij")

    def dist(c):
        return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2).sqrt()

    items = []
    for i in range(n):
        d = dist((torch.rand(3, generator=g) - 0.5) * 0.2)
        brain = torch.sigmoid((0.75 - d) * 20) * (0.6 + 0.3 * torch.cos(3 * d + i))
        mask = (dist((torch.rand(3, generator=g) - 0.5) * 0.6) < 0.25).float()
        if i % healthy_every == 0:
            mask = torch.zeros_like(mask)
        items.append({"healthy": brain[None], "lesioned": (brain * (1 - 0.6 * mask))[None], "mask": mask[None]})
    return items


@pytest.fixture(scope="module")
def cfg():
    return load_preset("tiny")


@pytest.fixture(scope="module")
def data():
    return toy_triplets()


@pytest.fixture(autouse=True)
def _quiet_perceptual(monkeypatch):
    """The perceptual warning is tested on its own; elsewhere it is noise."""
    monkeypatch.setattr(train_losses, "build_perceptual", lambda *a, **k: None)


def tensors_of(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(directory.rglob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(directory)}:{k}"] = v
    return out


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# --- losses fall ---------------------------------------------------------------------------------


def test_autoencoder_reconstruction_loss_falls(cfg, data, tmp_path):
    T.train_all(cfg, data, tmp_path, {"autoencoder": 12}, log_every=1, save_every=100)
    rows = T.read_log(tmp_path / "log.tsv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    first = sum(r["recon"] for r in rows[:4]) / 4
    last = sum(r["recon"] for r in rows[-4:]) / 4
    assert last < 0.5 * first
    for r in rows:  # every term of the objective is logged
        assert r["kl"] is not None and r["adv"] is not None and r["disc"] is not None and r["lr"] == cfg.training.vae_lr


def _fixed_eval(trainer: T.Trainer, n: int = 16, seed: int = 123):
    """A fixed evaluation set: latents, antithetic timesteps and noise, the same before and after."""
    items = [data_item for data_item in trainer.dataset][:n]
    batch = T.collate_triplets((items * ((n + len(items) - 1) // len(items)))[:n])
    with torch.no_grad():
        x0 = trainer.networks.encode(batch["mask"])
        y0 = trainer.networks.encode(batch["lesioned"])
    g = torch.Generator().manual_seed(seed)
    t = sample_timesteps(n, trainer.diffusion.T, g, True)
    return x0, y0, t, torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)


def _lesion_eval(trainer, ev) -> float:
    with torch.no_grad():
        return T.lesion_loss(trainer.networks.lesion, trainer.diffusion, *ev).item()


def _brain_eval(trainer, ev) -> float:
    x0, y0, t, eps_x, eps_y = ev
    healthy = torch.zeros(x0.shape[0], dtype=torch.bool)
    empty = trainer.networks.empty_condition(1)
    with torch.no_grad():
        y_t, cond, _ = T.brain_inputs(
            trainer.ema["lesion"].module, trainer.diffusion, x0, y0, t, eps_x, eps_y, healthy, empty
        )
        return T.brain_loss(trainer.networks.brain, y_t, cond, t, eps_y).item()


def test_denoiser_losses_fall(cfg, data, tmp_path):
    cfg = cfg.replace(training={"diffusion_lr": 2e-3})  # fewer steps to a clear drop
    trainer = T.Trainer(cfg, data, tmp_path, log_every=5, save_every=1000, latent_scale_samples=8)
    trainer.run({"autoencoder": 5})
    trainer.compute_latent_scale()
    ev = _fixed_eval(trainer)
    lesion_before = _lesion_eval(trainer, ev)
    trainer.run({"lesion": 20})
    lesion_after = _lesion_eval(trainer, ev)
    brain_before = _brain_eval(trainer, ev)
    trainer.run({"brain": 20})
    brain_after = _brain_eval(trainer, ev)
    assert lesion_after < 0.8 * lesion_before, (lesion_before, lesion_after)
    # The brain net learns more slowly: its condition x0_hat is amplified noise at large t.
    assert brain_after < 0.9 * brain_before, (brain_before, brain_after)


# --- resume ---------------------------------------------------------------------------------------

PLAN = {"autoencoder": 2, "lesion": 2, "brain": 4}


class CrashingData(torch.utils.data.Dataset):
    """Raises on the (after+1)-th item read: a job killed mid-stage."""

    def __init__(self, items, after: int):
        self.items, self.after, self.reads = items, after, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.after:
            raise RuntimeError("simulated crash")
        return self.items[i]


def test_resume_repeats_an_uninterrupted_run_exactly(cfg, data, tmp_path):
    options = dict(log_every=1, save_every=2, latent_scale_samples=4)
    T.train_all(cfg, data, tmp_path / "straight", PLAN, **options)

    # Split by the plan: stop after 1 VAE step, then after 1 lesion step, then finish.
    split = tmp_path / "split"
    T.train_all(cfg, data, split, {"autoencoder": 1}, **options)
    T.train_all(cfg, data, split, {"autoencoder": 2, "lesion": 1}, resume=True, **options)
    T.train_all(cfg, data, split, PLAN, resume=True, **options)

    # Crash in the middle of brain step 3 (its second read); the last save was at brain step 2.
    crash = tmp_path / "crash"
    reads_before_brain_step_3 = 2 * 2 + 4 + 2 * 2 + 2 * 2  # VAE, latent scale, lesion, 2 brain steps
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.train_all(cfg, CrashingData(data, reads_before_brain_step_3 + 1), crash, PLAN, **options)
    assert load_state(crash / "state", "trainer")["progress"] == {"autoencoder": 2, "lesion": 2, "brain": 2}
    T.train_all(cfg, data, crash, PLAN, resume=True, **options)

    reference = tensors_of(tmp_path / "straight")
    assert_same_tensors(reference, tensors_of(split))
    assert_same_tensors(reference, tensors_of(crash))
    for run in ("split", "crash"):  # the log has each step once, in order
        rows = T.read_log(tmp_path / run / "log.tsv")
        assert [(r["stage"], r["step"]) for r in rows] == [(s, i) for s in T.STAGES for i in range(1, PLAN[s] + 1)]


def test_iterable_dataset_resumes_exactly(cfg, data, tmp_path):
    class Stream(IterableDataset):
        def __iter__(self):
            while True:
                yield from data

    T.train_all(cfg, Stream(), tmp_path / "a", {"autoencoder": 2}, save_every=10)
    T.train_all(cfg, Stream(), tmp_path / "b", {"autoencoder": 1}, save_every=10)
    T.train_all(cfg, Stream(), tmp_path / "b", {"autoencoder": 2}, save_every=10, resume=True)
    assert_same_tensors(tensors_of(tmp_path / "a"), tensors_of(tmp_path / "b"))


def test_training_state_has_no_pickle(cfg, data, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.save/torch.load must not be used")

    monkeypatch.setattr(torch, "save", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    T.train_all(cfg, data, tmp_path, {"autoencoder": 2, "lesion": 1}, latent_scale_samples=4)
    T.train_all(cfg, data, tmp_path, {"autoencoder": 2, "lesion": 1, "brain": 2}, resume=True, latent_scale_samples=4)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".tsv"}
    assert {p.relative_to(tmp_path).as_posix() for p in files} >= {
        "checkpoint/model.safetensors",
        "checkpoint/config.json",
        "checkpoint/meta.json",
        "state/trainer.safetensors",
        "state/trainer.json",
        "log.tsv",
    }
    for p in files:  # no pickle protocol header anywhere
        assert not p.read_bytes().startswith(b"\x80"), p


# --- the latent scale and the checkpoint ---------------------------------------------------------


def test_latent_scale_is_computed_and_stored(cfg, data, tmp_path):
    nets = T.train_all(cfg, data, tmp_path, {"autoencoder": 3, "lesion": 1}, latent_scale_samples=8)
    with torch.no_grad():
        z_mu, _ = nets.autoencoder.encode(torch.stack([d["lesioned"] for d in data]))
    expected = 1.0 / z_mu.double().std(unbiased=False).item()
    assert float(nets.latent_scale) == pytest.approx(expected, rel=1e-5)
    assert float(nets.latent_scale) != 1.0
    meta = json.loads((tmp_path / "checkpoint" / "meta.json").read_text())
    assert meta["latent_scale"] == pytest.approx(expected, rel=1e-5)
    saved = load_file(str(tmp_path / "checkpoint" / "model.safetensors"))
    assert float(saved["latent_scale"]) == pytest.approx(expected, rel=1e-5)

    # The checkpoint carries the template the app registers to (the MNI template on the grid).
    from usb_model.checkpoint import load_template_arrays

    template = load_template_arrays(tmp_path / "checkpoint")
    assert template["t1w"].shape == cfg.grid.shape and template["affine"].shape == (4, 4)


def test_checkpoint_holds_ema_weights(cfg, data, tmp_path):
    trainer = T.Trainer(cfg, data, tmp_path, save_every=100, latent_scale_samples=4)
    trainer.run({"lesion": 3})
    saved = load_file(str(tmp_path / "checkpoint" / "model.safetensors"))
    for k, v in trainer.ema["lesion"].module.state_dict().items():
        assert torch.equal(saved[f"lesion.{k}"], v)
    online = trainer.networks.lesion.state_dict()
    assert any(not torch.equal(saved[f"lesion.{k}"], v) for k, v in online.items())


# --- healthy samples and the empty condition -----------------------------------------------------


def test_brain_inputs_use_empty_condition_for_healthy_samples(cfg):
    torch.manual_seed(0)
    nets = USBNetworks(cfg).eval()
    diffusion = Diffusion(cfg.schedule)
    _n, shape = 4, (4, *cfg.latent_shape)
    x0, y0, eps_x, eps_y = (torch.randn(shape) for _ in range(4))
    t = torch.tensor([10, 500, 900, 1013])
    empty = nets.empty_condition(1)
    healthy = torch.tensor([True, False, True, False])
    _, cond, _ = T.brain_inputs(nets.lesion, diffusion, x0, y0, t, eps_x, eps_y, healthy, empty)
    assert torch.equal(cond[healthy], nets.empty_condition(2))
    x_t, y_t = diffusion.add_noise(x0, eps_x, t), diffusion.add_noise(y0, eps_y, t)
    with torch.no_grad():
        x0_hat = diffusion.predict_x0(x_t, nets.lesion(torch.cat([x_t, y_t], 1), t), t)
    torch.testing.assert_close(cond[~healthy], x0_hat[~healthy])

    # The options change what the brain net sees / how it is weighted.
    y_t_inj, _, _ = T.brain_inputs(
        nets.lesion, diffusion, x0, y0, t, eps_x, eps_y, healthy, empty, latent_injection=0.05
    )
    torch.testing.assert_close(y_t_inj[1], diffusion.add_noise(y0 - 0.05 * x0, eps_y, t)[1])
    with torch.no_grad():
        plain = T.brain_loss(nets.brain, y_t, cond, t, eps_y)
        weighted = T.brain_loss(nets.brain, y_t, cond, t, eps_y, sigmoid_weighting=True)
    assert plain.item() != weighted.item()


@pytest.mark.parametrize("fraction", [1.0, 0.0])
def test_training_feeds_empty_condition_at_the_healthy_fraction(cfg, data, tmp_path, fraction):
    cfg = cfg.replace(training={"healthy_fraction": fraction})
    torch.manual_seed(0)
    nets = USBNetworks(cfg)
    seen = []
    nets.brain.register_forward_pre_hook(
        lambda module, args: seen.append(args[0][:, cfg.latent_shape[0] :].detach().clone())
    )
    T.train_all(cfg, data, tmp_path, {"autoencoder": 1, "brain": 3}, networks=nets, latent_scale_samples=4)
    assert len(seen) == 3
    empty = nets.empty_condition(cfg.training.batch_size)
    for cond in seen:
        assert torch.equal(cond, empty) == (fraction == 1.0)


# --- guards and helpers -------------------------------------------------------------------------


def test_existing_state_needs_resume(cfg, data, tmp_path):
    T.train_all(cfg, data, tmp_path, {"autoencoder": 1})
    with pytest.raises(FileExistsError, match="resume=True"):
        T.train_all(cfg, data, tmp_path, {"autoencoder": 2})


def test_plan_refuses_to_retrain_an_earlier_stage(cfg, data, tmp_path):
    T.train_all(cfg, data, tmp_path, {"autoencoder": 1, "lesion": 1}, latent_scale_samples=4)
    with pytest.raises(ValueError, match="already trained on it"):
        T.train_all(cfg, data, tmp_path, {"autoencoder": 2}, resume=True)
    with pytest.raises(ValueError, match="unknown training stage"):
        T.train_all(cfg, data, tmp_path, {"vae": 2}, resume=True)


def test_resume_refuses_another_architecture(cfg, data, tmp_path):
    T.train_all(cfg, data, tmp_path, {"autoencoder": 1})
    other = cfg.replace(denoiser={"channels": [16, 32, 64]})
    with pytest.raises(ValueError, match="different denoiser"):
        T.train_all(other, data, tmp_path, {"autoencoder": 1}, resume=True)


def test_perceptual_loss_off_without_offline_weights(cfg, monkeypatch):
    monkeypatch.setattr(
        train_losses, "perceptual_weights_available", lambda network_type="alex": (False, "not on disk")
    )
    with pytest.warns(UserWarning, match="perceptual loss is off because its weights are not available offline"):
        assert REAL_BUILD_PERCEPTUAL(cfg, torch.device("cpu")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert REAL_BUILD_PERCEPTUAL(cfg.replace(training={"vae_perceptual_weight": 0.0}), torch.device("cpu")) is None


def test_perceptual_check_reads_only_the_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    ok, reason = T.perceptual_weights_available("alex")
    assert ok is False and reason


def test_sharded_batches_are_disjoint_and_stateless():
    a = T.ShardedBatchSampler(10, 2, seed=5, start=0, stop=12, rank=0, world_size=2)
    b = T.ShardedBatchSampler(10, 2, seed=5, start=0, stop=12, rank=1, world_size=2)
    steps_a, steps_b = list(a), list(b)
    for i in range(2):  # the first full epoch: ranks never share a sample in a step
        assert not set(steps_a[i]) & set(steps_b[i])
    late = T.ShardedBatchSampler(10, 2, seed=5, start=7, stop=12, rank=1, world_size=2)
    assert list(late) == steps_b[7:]


def test_the_brain_condition_is_clamped_like_at_sampling():
    from usb_model.config import load_preset
    from usb_model.diffusion import Diffusion
    from usb_model.networks import USBNetworks

    cfg = load_preset("tiny")
    torch.manual_seed(0)
    nets = USBNetworks(cfg).eval()
    diffusion = Diffusion(cfg.schedule)
    shape = (2, *cfg.latent_shape)
    x0, y0, eps_x, eps_y = (torch.randn(shape) for _ in range(4))
    t = torch.tensor([1000, 1010])  # x0_hat is amplified noise here
    healthy = torch.tensor([False, False])
    empty = nets.empty_condition(2)
    with torch.no_grad():
        _, free, _ = T.brain_inputs(nets.lesion, diffusion, x0, y0, t, eps_x, eps_y, healthy, empty)
        _, clamped, _ = T.brain_inputs(
            nets.lesion, diffusion, x0, y0, t, eps_x, eps_y, healthy, empty, condition_clip=5.0
        )
    assert free.abs().max() > 5.0
    assert clamped.abs().max() <= 5.0
    assert torch.equal(clamped, free.clamp(-5, 5))


def test_init_autoencoder_loads_checked_weights(tmp_path, tiny_cfg):
    """usb-train --init-autoencoder: training continues from saved autoencoder weights (e.g. the
    CPU-trained one in benchmarks/checkpoints); a file of another shape is refused by name."""
    import torch
    from safetensors.torch import save_file

    from usb_model.checkpoint import CheckpointError
    from usb_model.networks import USBNetworks
    from usb_model.train.cli import networks_with_autoencoder

    torch.manual_seed(1)
    source = USBNetworks(tiny_cfg)
    path = tmp_path / "ae.safetensors"
    save_file({f"autoencoder.{k}": v.contiguous() for k, v in source.autoencoder.state_dict().items()}, str(path))
    loaded = networks_with_autoencoder(tiny_cfg, path)
    for key, value in source.autoencoder.state_dict().items():
        assert torch.equal(loaded.autoencoder.state_dict()[key], value)
    wrong = {
        f"autoencoder.{k}": v[..., :1].contiguous() if v.dim() else v
        for k, v in source.autoencoder.state_dict().items()
    }
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match="wrong.safetensors"):
        networks_with_autoencoder(tiny_cfg, tmp_path / "wrong.safetensors")


# --- learning-rate schedule -----------------------------------------------------------------------


def test_cosine_schedule_falls_to_its_floor_and_holds():
    from usb_model.train.schedule import lr_factor

    tr = (
        load_preset("tiny")
        .replace(training={"lr_schedule": "cosine", "lr_decay_steps": 10, "lr_min_ratio": 0.1})
        .training
    )
    factors = [lr_factor(s, tr) for s in range(14)]
    assert factors[0] == 1.0
    assert all(a > b for a, b in zip(factors[:10], factors[1:11]))  # strictly falling over the decay
    assert factors[10:] == pytest.approx([0.1] * 4)  # then held at the floor
    assert factors[5] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: half-way between 1 and the floor
    constant = load_preset("tiny").training
    assert {lr_factor(s, constant) for s in (0, 7, 10_000)} == {1.0}
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, load_preset("tiny").replace(training={"lr_schedule": "step"}).training)


def test_training_follows_the_cosine_schedule_across_a_resume(cfg, data, tmp_path):
    """The logged rate is the schedule's, and a run split in two logs the same rates."""
    from usb_model.train.schedule import lr_factor

    cfg = cfg.replace(training={"lr_schedule": "cosine", "lr_decay_steps": 4, "lr_min_ratio": 0.25})
    T.train_all(cfg, data, tmp_path / "a", {"autoencoder": 5}, log_every=1, save_every=100)
    T.train_all(cfg, data, tmp_path / "b", {"autoencoder": 2}, log_every=1, save_every=100)
    T.train_all(cfg, data, tmp_path / "b", {"autoencoder": 5}, log_every=1, save_every=100, resume=True)
    expected = [cfg.training.vae_lr * lr_factor(s, cfg.training) for s in range(5)]
    for run in ("a", "b"):
        rows = T.read_log(tmp_path / run / "log.tsv")
        assert [r["lr"] for r in rows] == pytest.approx(expected)
    assert_same_tensors(tensors_of(tmp_path / "a"), tensors_of(tmp_path / "b"))


def test_fetching_perceptual_weights_names_the_missing_extra(monkeypatch, tmp_path):
    """Without the train extra the fetch fails with the pip command, and usb-train exits 1 with it."""
    from click.testing import CliRunner

    from usb_model.train.cli import main as usb_train

    real_find_spec = train_losses.importlib.util.find_spec
    monkeypatch.setattr(
        train_losses.importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real_find_spec(name, *a)
    )
    with pytest.raises(RuntimeError, match=r"lpips package is not installed; pip install 'bids-usb\[train\]'"):
        train_losses.fetch_perceptual_weights("alex")
    result = CliRunner().invoke(usb_train, [str(tmp_path / "out"), "--fetch-perceptual"])
    assert result.exit_code == 1 and "bids-usb[train]" in result.output
    assert not (tmp_path / "out").exists()


def test_the_trainer_shares_its_threads_on_a_signal():
    """scripts/campaign.sh share/full: SIGUSR1 puts the running trainer on one thread, SIGUSR2
    back on its own count."""
    import os
    import signal

    import torch

    from usb_model.train.cli import share_threads_on_signal

    saved = torch.get_num_threads(), signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGUSR2)
    try:
        torch.set_num_threads(2)
        share_threads_on_signal(2)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert torch.get_num_threads() == 1
        os.kill(os.getpid(), signal.SIGUSR2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved[0])
        signal.signal(signal.SIGUSR1, saved[1])
        signal.signal(signal.SIGUSR2, saved[2])
