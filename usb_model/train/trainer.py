"""The Trainer: three stages in order, a resumable state on disk, and the public entry points."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import PatchAdversarialLoss
from torch import nn

from ..checkpoint import atomic_directory, load_state, load_weights, save_checkpoint, save_state
from ..config import USBConfig
from ..device import autocast, make_generator
from ..diffusion import Diffusion, sample_timesteps
from ..networks import USBNetworks, encoder_modules
from . import latents, losses
from .data import batches, chunks, collate_triplets, first_items, is_map_style, mix_seed, random_crop
from .distributed import Distributed, setup_distributed
from .ema import EMA
from .log import append_log, truncate_log
from .losses import autoencoder_loss, brain_inputs, brain_loss, build_discriminator, discriminator_loss, lesion_loss
from .schedule import lr_factor

STAGES = ("autoencoder", "lesion", "brain")
STATE_DIR = "state"
LATENT_DIR = "latents"
# A cached mask latent within this of the empty mask's latent (max abs, scaled latent units) is a
# healthy item's: float16 rounding of unit-std latents is below 0.01 (checked on the campaign's
# cache: the share of items under it matches healthy_fraction).
EMPTY_LATENT_TOLERANCE = 0.02
STATE_NAME = "trainer"
CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.tsv"
STATE_FORMAT = "usb-train-state/1"
# Sections whose change would make saved weights meaningless; training settings may change.
ARCHITECTURE = ("grid", "autoencoder", "denoiser", "schedule")

log = logging.getLogger("usb_model.train")


@torch.no_grad()
def latent_std(autoencoder: nn.Module, images: Iterable[torch.Tensor], ctx: Distributed | None = None) -> float:
    """Standard deviation of the unscaled posterior means of ``images`` (batches (N, 1, *grid)).

    Sums are in float64 and all-reduced across ranks, so every rank gets the same value.
    """
    ctx = ctx or Distributed()
    sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    for volume in images:
        z_mu, _ = autoencoder.encode(volume.to(ctx.device))
        z = z_mu.double()
        sums += torch.stack(
            [torch.tensor(float(z.numel()), dtype=torch.float64, device=z.device), z.sum(), z.pow(2).sum()]
        )
    count, total, squares = ctx.all_sum(sums).tolist()
    if count == 0:
        raise ValueError("no training images to compute the latent scale from")
    variance = squares / count - (total / count) ** 2
    return math.sqrt(max(variance, 0.0))


@dataclass
class _StepRandom:
    """The random sources of one step: a CPU generator for small draws, one on the device for noise."""

    cpu: torch.Generator
    device: torch.Generator


class Trainer:
    """Runs the three stages in order and keeps everything a resume needs.

    ``dataset`` is any map-style dataset or iterable of {"healthy", "lesioned", "mask"} dicts of
    float tensors (1, *grid) in [0, 1]. ``cfg.training.batch_size`` is per process; a step is one
    optimizer update on ``batch_size * world_size`` samples. ``networks`` (optional) gives initial
    weights, e.g. a pretrained autoencoder, and is trained in place; a resumed state overrides it.
    ``initialised_from`` (what ``networks`` were loaded from, recorded in the checkpoint's notes)
    marks a fine-tune of a finished checkpoint: its latent scale is kept, not recomputed.

    The brain stage draws its healthy samples itself (Bernoulli(``healthy_fraction``) per sample:
    the item's "healthy" image as target, the empty condition); items that are healthy in the
    dataset (empty mask) otherwise go through the lesion path like any other, so the brain net
    also sees the lesion net's estimate of "no lesion", as in paired generation.
    """

    def __init__(
        self,
        cfg: USBConfig,
        dataset: Any,
        out_dir: str | Path,
        *,
        device: str | torch.device | None = None,
        seed: int = 0,
        networks: USBNetworks | None = None,
        log_every: int = 10,
        save_every: int = 100,
        num_workers: int = 0,
        latent_scale_samples: int = 64,
        perceptual_network: str = "alex",
        training_data: dict[str, Any] | None = None,
        template: dict[str, Any] | str | None = "mni",
        initialised_from: dict[str, Any] | None = None,
    ):
        if seed < 0:
            raise ValueError("seed must be a non-negative integer")
        self.cfg, self.dataset, self.out_dir = cfg, dataset, Path(out_dir)
        self.seed, self.log_every, self.save_every = int(seed), max(1, log_every), max(1, save_every)
        self.num_workers, self.latent_scale_samples = num_workers, latent_scale_samples
        self.perceptual_network = perceptual_network
        self.training_data = training_data or _describe(dataset)
        self._template_spec, self._template = template, None
        self.ctx = setup_distributed(device)
        self.device = self.ctx.device
        self.diffusion = Diffusion(cfg.schedule)
        self.networks, self.discriminator = self._build(networks)
        if not cfg.training.vae_train_encoder:
            # The latent space is fixed: no gradient reaches the encoder, and Adam skips it.
            for module in encoder_modules(self.networks.autoencoder):
                module.requires_grad_(False)
        self.ema = {name: EMA(getattr(self.networks, name), cfg.training.ema_decay) for name in ("lesion", "brain")}
        if cfg.training.vae_ema_decay > 0:
            # Until the denoiser stages adopt it (_finish_autoencoder): then it is dropped.
            self.ema["autoencoder"] = EMA(self.networks.autoencoder, cfg.training.vae_ema_decay)
        # The autoencoder as the run started (training.vae_latent_anchor): a frozen copy whose
        # latents the trained encoder is held near. Kept in the state, so a resume anchors to the
        # same latents, not to those of the step it resumes from.
        self.anchor: nn.Module | None = None
        if cfg.training.vae_latent_anchor > 0:
            self.anchor = copy.deepcopy(self.networks.autoencoder).eval().requires_grad_(False)
        self.optimizers = self._build_optimizers()
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.progress = {stage: 0 for stage in STAGES}
        self.seconds = {stage: 0.0 for stage in STAGES}
        # A fine-tune from a finished checkpoint keeps the latent scale its denoisers learnt on.
        self.initialised_from = initialised_from
        self.latent_scale_done = initialised_from is not None
        self._saved: tuple | None = None  # the position last written to disk
        self._wrapped: dict[str, nn.Module] = {}  # the DDP (or plain) modules of the running stage
        self.perceptual: nn.Module | None = None
        self._empty: torch.Tensor | None = None
        self._empty_mask_latent: torch.Tensor | None = None  # an all-zero mask's latent, once needed
        self._latents: latents.LatentDataset | None = None  # the denoisers' cached latents, once built

    # -- construction ---------------------------------------------------------------------------

    def _build(self, networks: USBNetworks | None) -> tuple[USBNetworks, nn.Module]:
        """Same seed on every rank, so ranks start equal even before DDP broadcasts."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if networks is None:
                networks = USBNetworks(self.cfg)
            discriminator = build_discriminator(self.cfg)
        return networks.to(self.device), discriminator.to(self.device)

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        tr = self.cfg.training
        lr_factor(0, tr)  # an unknown schedule fails here, not after the first stage
        return {
            "autoencoder": torch.optim.Adam(self.networks.autoencoder.parameters(), lr=tr.vae_lr),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=tr.vae_lr),
            "lesion": torch.optim.Adam(self.networks.lesion.parameters(), lr=tr.diffusion_lr),
            "brain": torch.optim.Adam(self.networks.brain.parameters(), lr=tr.diffusion_lr),
        }

    # -- state ----------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    @property
    def log_path(self) -> Path:
        return self.out_dir / LOG_FILE

    def has_state(self) -> bool:
        return (self.state_dir / f"{STATE_NAME}.json").is_file()

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "seed": self.seed,
            "world_size": self.ctx.world_size,
            "progress": dict(self.progress),
            "seconds": dict(self.seconds),
            "latent_scale_done": self.latent_scale_done,
            "initialised_from": self.initialised_from,
            "networks": self.networks.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": {name: ema.state_dict() for name, ema in self.ema.items()},
            **({"anchor": {"weights": self.anchor.state_dict()}} if self.anchor is not None else {}),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_dir} is not a USB training state ({state.get('format')!r})")
        self._check_config(state["config"])
        if int(state["seed"]) != self.seed:
            warnings.warn(
                f"resuming with seed {self.seed}, the state was trained with seed {state['seed']}", stacklevel=2
            )
        if int(state["world_size"]) != self.ctx.world_size:
            warnings.warn(
                f"resuming on {self.ctx.world_size} process(es), the state was written by {state['world_size']}; "
                "batches and noise will differ from an uninterrupted run",
                stacklevel=2,
            )
        load_weights(self.networks, state["networks"], source="training state")
        load_weights(self.discriminator, state["discriminator"], source="training state (discriminator)")
        for name, ema in self.ema.items():
            if name in state["ema"]:
                ema.load_state_dict(state["ema"][name])
            else:  # an autoencoder EMA switched on in a resumed run: it starts at the online weights
                self.ema[name] = EMA(self.networks.autoencoder, self.cfg.training.vae_ema_decay)
                log.info(
                    "autoencoder EMA (decay %s) starts at step %d's weights",
                    self.ema[name].decay,
                    int(state["progress"]["autoencoder"]),
                )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.anchor is not None:
            if state.get("anchor") is not None:
                load_weights(self.anchor, state["anchor"]["weights"], source="training state (latent anchor)")
            else:  # switched on in a resumed run: the anchor is the autoencoder it resumes
                self.anchor.load_state_dict(self.networks.autoencoder.state_dict())
                log.info("latent anchor: the autoencoder at step %d", int(state["progress"]["autoencoder"]))
        self.progress = {stage: int(state["progress"][stage]) for stage in STAGES}
        self.seconds = {stage: float(state["seconds"][stage]) for stage in STAGES}
        self.latent_scale_done = bool(state["latent_scale_done"])
        self.initialised_from = state.get("initialised_from") or self.initialised_from

    def _check_config(self, saved: dict[str, Any]) -> None:
        current = self.cfg.to_dict()
        changed = [s for s in ARCHITECTURE if USBConfig.from_dict(saved).to_dict()[s] != current[s]]
        if changed:
            raise ValueError(
                f"the training state in {self.state_dir} was made with a different {', '.join(changed)} configuration"
            )

    def resume(self) -> bool:
        """Load the saved state if there is one (every rank reads it); True when loaded."""
        if not self.has_state():
            return False
        self.load_state_dict(load_state(self.state_dir, STATE_NAME))
        if self.ctx.is_main:
            truncate_log(self.log_path, self.progress)
        self._saved = self._position()
        self.ctx.barrier()
        return True

    def save(self) -> None:
        """Rank 0 writes the state, then the inference checkpoint (EMA denoisers); all ranks wait."""
        if self.ctx.is_main:
            state = self.state_dict()
            atomic_directory(self.state_dir, lambda tmp: save_state(state, tmp, STATE_NAME))
            with self.ema_weights():
                save_checkpoint(
                    self.networks,
                    self.checkpoint_dir,
                    training_data=self.training_data,
                    notes=self._notes(),
                    template=self._checkpoint_template(),
                )
        self._saved = self._position()
        self.ctx.barrier()

    def _checkpoint_template(self) -> dict[str, Any] | None:
        """The template the checkpoint carries (the BIDS App registers participants to it).

        ``"mni"``: the MNI template on ``cfg.grid``, the space the synthetic training set lives
        in; a dict ``{"t1w", "brain_mask", "affine"}``: the caller's; None: none (such a
        checkpoint can sample but cannot serve the app).
        """
        if self._template is None and self._template_spec is not None:
            if isinstance(self._template_spec, dict):
                self._template = self._template_spec
            elif self._template_spec == "mni":
                from ..template import load_template  # nilearn is an optional dependency

                mni = load_template(self.cfg.grid)
                self._template = {"t1w": mni.t1w, "brain_mask": mni.brain_mask, "affine": mni.affine}
            else:
                raise ValueError(f"template must be 'mni', a dict or None; got {self._template_spec!r}")
        return self._template

    def _notes(self) -> dict[str, Any]:
        tr = self.cfg.training
        return {
            "trained_steps": dict(self.progress),
            "seed": self.seed,
            "world_size": self.ctx.world_size,
            "denoiser_weights": f"EMA (decay {tr.ema_decay}, warm-up (1+n)/(10+n))",
            "autoencoder_weights": f"EMA (decay {tr.vae_ema_decay}, warm-up (1+n)/(10+n))"
            if tr.vae_ema_decay > 0
            else "online",
            "latent_scale": f"1/std of posterior means of {self.latent_scale_samples} training images"
            if self.latent_scale_done
            else "not computed (no diffusion training yet)",
            "healthy_fraction": tr.healthy_fraction,
            "lesion_healthy_items": tr.lesion_healthy_items,
            "latent_injection": tr.latent_injection,
            "sigmoid_weighting": tr.sigmoid_weighting,
            "prediction_type": self.cfg.schedule.prediction_type,
            "min_snr_gamma": tr.min_snr_gamma,
            "timestep_focus": [tr.timestep_focus, tr.timestep_focus_max],
            "latent_cache": f"{tr.latent_cache} triplets and their mirrors, encoded once"
            if tr.latent_cache
            else "none",
        } | ({"initialised_from": self.initialised_from} if self.initialised_from else {})

    @contextlib.contextmanager
    def ema_weights(self):
        """Temporarily put the EMA weights into the denoisers, and into the autoencoder while its
        stage keeps one (for saving or evaluating)."""
        online = {
            name: {k: v.detach().clone() for k, v in getattr(self.networks, name).state_dict().items()}
            for name in self.ema
        }
        try:
            for name, ema in self.ema.items():
                getattr(self.networks, name).load_state_dict(ema.module.state_dict())
            yield self.networks
        finally:
            for name, weights in online.items():
                getattr(self.networks, name).load_state_dict(weights)

    def inference_networks(self) -> USBNetworks:
        """A copy of the networks with the EMA denoisers, in eval mode: what the checkpoint holds."""
        with self.ema_weights():
            return copy.deepcopy(self.networks).eval()

    # -- the plan -------------------------------------------------------------------------------

    def run(self, steps: dict[str, int]) -> None:
        """Train each stage up to its total step count in ``steps`` (absent = keep what is done).

        A stage cannot continue once a later stage has started: the later one was trained on it.
        """
        targets = self._targets(steps)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for stage in STAGES:
                if self.progress[stage] >= targets[stage]:
                    continue
                if stage != "autoencoder":
                    self._finish_autoencoder()
                if stage != "autoencoder" and not self.latent_scale_done:
                    self.compute_latent_scale()
                self._run_stage(stage, targets[stage])
        if self._saved != self._position():
            self.save()

    def _position(self) -> tuple:
        return tuple(self.progress[s] for s in STAGES), self.latent_scale_done

    def _targets(self, steps: dict[str, int]) -> dict[str, int]:
        unknown = set(steps) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown training stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
        targets = {stage: int(steps.get(stage, self.progress[stage])) for stage in STAGES}
        for i, stage in enumerate(STAGES):
            if targets[stage] < 0:
                raise ValueError(f"steps for {stage} must be >= 0")
            later = [s for s in STAGES[i + 1 :] if self.progress[s] > 0]
            if targets[stage] > self.progress[stage] and later:
                raise ValueError(
                    f"cannot train {stage} further ({self.progress[stage]} -> {targets[stage]} steps): "
                    f"{', '.join(later)} was already trained on it; start a new training directory"
                )
        return targets

    # -- stages ---------------------------------------------------------------------------------

    def _finish_autoencoder(self) -> None:
        """The denoisers train on the autoencoder the checkpoint holds: its EMA, where it has one.

        From then on the autoencoder no longer changes, so its EMA is its weights and is dropped,
        and so is the latent anchor (nothing trains the encoder any more).
        """
        ema = self.ema.pop("autoencoder", None)
        if ema is not None:
            self.networks.autoencoder.load_state_dict(ema.module.state_dict())
        self.anchor = None

    def compute_latent_scale(self) -> float:
        """Set ``networks.latent_scale`` to 1/std of the training images' posterior means."""
        self.networks.autoencoder.eval()
        B = self.cfg.training.batch_size
        items = first_items(self.dataset, self.latent_scale_samples, self.ctx.rank, self.ctx.world_size)
        volumes = (collate_triplets(chunk)["lesioned"] for chunk in chunks(items, B))
        std = latent_std(self.networks.autoencoder, volumes, self.ctx)
        if not math.isfinite(std) or std <= 0:
            raise ValueError(f"the training latents have std {std}; cannot scale them")
        self.networks.latent_scale.fill_(1.0 / std)
        self.latent_scale_done = True
        return 1.0 / std

    def _run_stage(self, stage: str, target: int) -> None:
        step_fn = self._prepare_stage(stage)
        start = self.progress[stage]
        source = batches(
            self._stage_data(stage),
            self.cfg.training.batch_size,
            mix_seed(self.seed, STAGES.index(stage)),
            start,
            target,
            self.ctx.rank,
            self.ctx.world_size,
            self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        window: dict[str, list[float]] = {}
        clock = time.perf_counter()
        for step, batch in zip(range(start, target), source):
            self._set_lr(stage, step)
            terms = step_fn(batch, self._step_random(stage, step))
            for key, value in terms.items():
                window.setdefault(key, []).append(value)
            self.progress[stage] = step + 1
            now = time.perf_counter()
            self.seconds[stage] += now - clock
            clock = now
            if (step + 1) % self.log_every == 0 or step + 1 == target:
                self._log(stage, step + 1, window, target)
                window = {}
            if (step + 1) % self.save_every == 0 or step + 1 == target:
                self.save()
                clock = time.perf_counter()
        self._wrapped = {}

    def _stage_data(self, stage: str) -> Any:
        """The training triplets for ``stage``: the dataset itself, or for a denoiser stage with
        ``latent_cache`` set, its cached latents (rank 0 encodes them; every rank reads the file)."""
        count = self.cfg.training.latent_cache
        if stage == "autoencoder" or count <= 0:
            return self.dataset
        if self._latents is None:
            directory = self.out_dir / LATENT_DIR
            if self.ctx.is_main:
                clock = time.perf_counter()
                self._latents, built = latents.load_or_build(
                    directory, self.networks, self.dataset, count, self.cfg.training.batch_size, self.device
                )
                if built:
                    log.info(
                        "encoded %d training triplets and their mirrors (%.0f s)", count, time.perf_counter() - clock
                    )
            self.ctx.barrier()
            if not self.ctx.is_main:
                self._latents, _ = latents.load_or_build(
                    directory, self.networks, self.dataset, count, self.cfg.training.batch_size, self.device
                )
        return self._latents

    def _set_lr(self, stage: str, step: int) -> None:
        tr = self.cfg.training
        factor = lr_factor(step, tr)
        names = ("autoencoder", "discriminator") if stage == "autoencoder" else (stage,)
        base = tr.vae_lr if stage == "autoencoder" else tr.diffusion_lr
        for name in names:
            for group in self.optimizers[name].param_groups:
                group["lr"] = base * factor

    def _step_random(self, stage: str, step: int) -> _StepRandom:
        """Seeds for step ``step`` of ``stage`` on this rank; also seeds torch's global RNG,
        which MONAI uses inside (the VAE's posterior sample, LPIPS slice choice)."""
        cpu_seed, dev_seed, global_seed = np.random.SeedSequence(
            [self.seed, STAGES.index(stage), step, self.ctx.rank]
        ).generate_state(3)
        torch.manual_seed(int(global_seed))
        return _StepRandom(
            cpu=torch.Generator().manual_seed(int(cpu_seed)), device=make_generator(int(dev_seed), self.device)
        )

    def _prepare_stage(self, stage: str):
        """Modes, DDP wrappers and cached tensors of a stage; returns its step function."""
        self._wrapped = {}
        if stage == "autoencoder":
            self.networks.autoencoder.train()
            self.discriminator.train()
            self.perceptual = losses.build_perceptual(self.cfg, self.device, self.perceptual_network)
            self._wrapped = {
                "autoencoder": self.ctx.wrap(self.networks.autoencoder),
                "discriminator": self.ctx.wrap(self.discriminator),
            }
            return self._autoencoder_step
        self.networks.autoencoder.eval()
        net = getattr(self.networks, stage)
        net.train()
        self._wrapped = {stage: self.ctx.wrap(net)}
        if stage == "lesion":
            return self._lesion_step
        with torch.no_grad():
            self._empty = self.networks.empty_condition(1, self.device).float()
        self.ema["lesion"].module.eval()
        return self._brain_step

    def _autocast(self):
        return autocast(self.device, self.cfg.training.mixed_precision)

    def _optimize(self, name: str, loss: torch.Tensor, params) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.training.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.training.grad_clip)
        opt.step()

    def _autoencoder_step(self, batch: dict[str, torch.Tensor], rnd: _StepRandom) -> dict[str, float]:
        """One VAE update on images and (vae_mask_fraction of the samples) masks, then one D update."""
        tr = self.cfg.training
        use_mask = torch.rand(batch["lesioned"].shape[0], generator=rnd.cpu) < tr.vae_mask_fraction
        pick = use_mask.view(-1, 1, 1, 1, 1)
        x = torch.where(pick, batch["mask"], batch["lesioned"])
        x = random_crop(x, tr.vae_patch, rnd.cpu).to(self.device, non_blocking=True)
        adversarial_on = tr.vae_adv_weight > 0
        with self._autocast():
            recon, z_mu, z_sigma = self._wrapped["autoencoder"](x)
            # The generator's adversarial term uses the plain discriminator: its gradients on D
            # are discarded below, and DDP must see exactly one forward per backward.
            total, terms = autoencoder_loss(
                x,
                recon,
                z_mu,
                z_sigma,
                self.cfg,
                self.discriminator if adversarial_on else None,
                self.perceptual,
                self.adversarial,
            )
            if self.anchor is not None:
                with torch.no_grad():
                    anchored, _ = self.anchor.encode(x)
                drift = (((z_mu.float() - anchored.float()) * self.networks.latent_scale) ** 2).mean()
                total = total + tr.vae_latent_anchor * drift
                terms["anchor"] = drift.item()
                terms["loss"] = total.item()
        self._optimize("autoencoder", total, self.networks.autoencoder.parameters())
        if "autoencoder" in self.ema:
            self.ema["autoencoder"].update(self.networks.autoencoder)
        if adversarial_on:
            with self._autocast():
                d_loss = discriminator_loss(self._wrapped["discriminator"], x, recon, self.adversarial)
            self._optimize("discriminator", d_loss, self.discriminator.parameters())
            terms["disc"] = d_loss.item()
        return terms

    def _encode(self, volume: torch.Tensor) -> torch.Tensor:
        """The scaled latent of a batch of volumes; batches of cached latents pass through."""
        if self._latents is not None and self.cfg.training.latent_cache > 0:
            return volume.to(self.device, non_blocking=True).float()
        with torch.no_grad(), self._autocast():
            return self.networks.encode(volume.to(self.device, non_blocking=True)).float()

    def _draws(self, like: torch.Tensor, rnd: _StepRandom) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Antithetic timesteps and two independent noises shaped like ``like``."""
        tr = self.cfg.training
        t = sample_timesteps(
            like.shape[0],
            self.diffusion.T,
            rnd.cpu,
            tr.antithetic_timesteps,
            tr.timestep_focus,
            tr.timestep_focus_max,
        ).to(self.device)
        eps_x = torch.randn(like.shape, generator=rnd.device, device=self.device)
        eps_y = torch.randn(like.shape, generator=rnd.device, device=self.device)
        return t, eps_x, eps_y

    def _lesion_step(self, batch: dict[str, torch.Tensor], rnd: _StepRandom) -> dict[str, float]:
        x0, y0 = self._encode(batch["mask"]), self._encode(batch["lesioned"])
        if not self.cfg.training.lesion_healthy_items:
            x0, y0 = self._lesioned_rows(batch["mask"], x0, y0)
        t, eps_x, eps_y = self._draws(x0, rnd)
        with self._autocast():
            loss = lesion_loss(
                self._wrapped["lesion"], self.diffusion, x0, y0, t, eps_x, eps_y, self.cfg.training.min_snr_gamma
            )
        self._optimize("lesion", loss, self.networks.lesion.parameters())
        self.ema["lesion"].update(self.networks.lesion)
        return {"loss": loss.item()}

    def _lesioned_rows(
        self, mask: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of a batch whose mask is not empty (``lesion_healthy_items`` false).

        A cached mask latent is empty when it is the empty mask's latent (the encoder is
        deterministic, so healthy items encode to it up to float16 rounding); a raw mask when it
        has no voxel. A batch of healthy items only (0.2^4 at batch 4) is trained on as it is,
        so every rank still runs one forward and backward per step, as DDP needs.
        """
        if self._latents is not None and self.cfg.training.latent_cache > 0:
            if self._empty_mask_latent is None:
                with torch.no_grad():
                    zeros = torch.zeros((1, 1, *self.cfg.grid.shape), device=self.device)
                    self._empty_mask_latent = self.networks.encode(zeros).float()
            lesioned = (x0 - self._empty_mask_latent).abs().flatten(1).amax(dim=1) > EMPTY_LATENT_TOLERANCE
        else:
            lesioned = mask.flatten(1).amax(dim=1).to(self.device) > 0
        if not bool(lesioned.any()):
            return x0, y0
        return x0[lesioned], y0[lesioned]

    def _brain_step(self, batch: dict[str, torch.Tensor], rnd: _StepRandom) -> dict[str, float]:
        tr = self.cfg.training
        n = batch["lesioned"].shape[0]
        healthy = torch.rand(n, generator=rnd.cpu) < tr.healthy_fraction
        images = torch.where(healthy.view(-1, 1, 1, 1, 1), batch["healthy"], batch["lesioned"])
        x0, y0 = self._encode(batch["mask"]), self._encode(images)
        t, eps_x, eps_y = self._draws(x0, rnd)
        healthy = healthy.to(self.device)
        with self._autocast():
            y_t, condition, y0 = brain_inputs(
                self.ema["lesion"].module,
                self.diffusion,
                x0,
                y0,
                t,
                eps_x,
                eps_y,
                healthy,
                self._empty,
                tr.latent_injection,
                tr.condition_clip,
            )
            loss = brain_loss(
                self._wrapped["brain"],
                y_t,
                condition,
                t,
                self.diffusion.target(y0, eps_y, t),
                tr.sigmoid_weighting,
                self.diffusion.loss_weight(t, tr.min_snr_gamma),
            )
        self._optimize("brain", loss, self.networks.brain.parameters())
        self.ema["brain"].update(self.networks.brain)
        return {"loss": loss.item()}

    def _log(self, stage: str, step: int, window: dict[str, list[float]], target: int | None = None) -> None:
        """Mean of each term over the window and over ranks; rank 0 appends the row to the log
        file and reports progress (the ``usb_model.train`` logger, INFO)."""
        keys = sorted(window)
        means = torch.tensor([sum(window[k]) / len(window[k]) for k in keys], dtype=torch.float64, device=self.device)
        means = self.ctx.all_mean(means).tolist()
        if not self.ctx.is_main:
            return
        opt = self.optimizers[stage]
        row = {
            "stage": stage,
            "step": step,
            "lr": float(opt.param_groups[0]["lr"]),
            "seconds": round(self.seconds[stage], 3),
        }
        row.update(dict(zip(keys, means)))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        append_log(self.log_path, row)
        loss = row.get("loss")
        log.info(
            "%s step %d/%s%s (%.0f s)",
            stage,
            step,
            target if target is not None else "?",
            f": loss {loss:.4g}" if isinstance(loss, float) else "",
            self.seconds[stage],
        )

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        self.ctx.close()


def _describe(dataset: Any) -> dict[str, Any]:
    """What the checkpoint records about its training data when the caller says nothing."""
    described: dict[str, Any] = {"dataset": type(dataset).__name__}
    if is_map_style(dataset):
        described["length"] = len(dataset)
    for attr in (
        "seed",
        "shape",
        "voxel_size",
        "contrast",
        "healthy_fraction",
        "size",
        "wmh_fraction",
        "prior_fraction",
    ):
        value = getattr(dataset, attr, None)
        if isinstance(value, (int, float, str, bool)) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value)
        ):
            described[attr] = list(value) if isinstance(value, tuple) else value
    return described


def train_all(
    cfg: USBConfig,
    dataset: Any,
    out_dir: str | Path,
    steps: dict[str, int],
    *,
    device: str | torch.device | None = None,
    resume: bool = False,
    log_every: int = 10,
    save_every: int = 100,
    seed: int = 0,
    **trainer_options: Any,
) -> USBNetworks:
    """Train the stages of ``steps`` ({"autoencoder": n1, "lesion": n2, "brain": n3}, totals) in
    order and return the networks as saved for inference (EMA denoisers), on every rank.

    ``resume=True`` continues from ``out_dir``'s state when there is one (else starts fresh);
    ``resume=False`` refuses a directory that already holds a state. Under torchrun
    (WORLD_SIZE > 1) every rank calls this; rank 0 writes.
    """
    trainer = Trainer(
        cfg, dataset, out_dir, device=device, seed=seed, log_every=log_every, save_every=save_every, **trainer_options
    )
    try:
        if trainer.has_state() and not resume:
            raise FileExistsError(
                f"{trainer.state_dir} holds a training state; pass resume=True or choose another directory"
            )
        if resume:
            trainer.resume()
        trainer.run(steps)
        return trainer.inference_networks()
    finally:
        trainer.close()


def train_autoencoder(cfg: USBConfig, dataset: Any, out_dir: str | Path, steps: int, **options: Any) -> USBNetworks:
    """Train (or continue) the autoencoder to ``steps`` total steps."""
    return train_all(cfg, dataset, out_dir, {"autoencoder": steps}, **options)


def train_lesion(cfg: USBConfig, dataset: Any, out_dir: str | Path, steps: int, **options: Any) -> USBNetworks:
    """Train USB_lesion to ``steps`` total steps on the autoencoder in ``out_dir`` (resume=True)
    or on ``networks=`` given; computes the latent scale first if not done yet."""
    return train_all(cfg, dataset, out_dir, {"lesion": steps}, **options)


def train_brain(cfg: USBConfig, dataset: Any, out_dir: str | Path, steps: int, **options: Any) -> USBNetworks:
    """Train USB_brain to ``steps`` total steps against the frozen (EMA) lesion net."""
    return train_all(cfg, dataset, out_dir, {"brain": steps}, **options)
