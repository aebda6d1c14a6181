"""Configuration of a USB model: one dataclass per concern, JSON in and out.

A checkpoint stores its configuration as JSON next to its weights, so everything that
changes what a model computes lives here (and nothing that only changes where files go).
Presets (`paper`, `tiny`, ...) are JSON files in the top-level ``resources/configs`` so that users
can copy one and edit it rather than read Python.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import bids_usb_resources

PRESET_DIR = bids_usb_resources.CONFIGS


@dataclass
class GridConfig:
    """The model grid: every image the networks see is resampled to it (RAS, template space)."""

    shape: tuple[int, int, int] = (160, 160, 160)
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    contrast: str = "T1w"  # the modality the model was trained on (T1w or FLAIR)
    # How intensities were mapped to [0, 1] for training (usb_model.intensity.NORMALISATIONS):
    # "percentile" (this project: the brain's 99.5th percentile to 1) or "minmax" (the authors':
    # the brain's maximum to 1). Inference must use the model's own rule.
    normalisation: str = "percentile"
    # Which copy of the MNI152NLin2009aSym template the model was trained with and carries
    # (usb_model.template): "nilearn" (nilearn's wheel; every checkpoint without this field) or
    # "templateflow" (TemplateFlow's files in TEMPLATEFLOW_HOME, read offline).
    template_source: str = "nilearn"


@dataclass
class AutoencoderConfig:
    """MONAI ``AutoencoderKL``; one VAE encodes brain images and lesion masks alike."""

    channels: tuple[int, ...] = (64, 128, 128, 128)
    latent_channels: int = 3
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    attention_levels: tuple[bool, ...] = (False, False, False, False)
    # The decoder's channels (and GroupNorm groups) are ``decoder_width`` times the encoder's.
    # A decoder can grow on a fixed encoder without touching the latent space the denoisers
    # learnt: the demo model's narrow decoder flattened at 29 dB (issue 22), and
    # ``usb_model.train.widen`` starts a wider one as an exact copy of it.
    decoder_width: int = 1

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass
class DenoiserConfig:
    """MONAI ``DiffusionModelUNet``; USB_lesion and USB_brain share this shape, not weights.

    Conditioning is channel concatenation only: the first convolution sees
    ``[z_t, cond]``, so ``in_channels = 2 * latent_channels`` (set by networks.py).
    """

    channels: tuple[int, ...] = (128, 256, 256)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 256
    norm_num_groups: int = 32
    # The residual block (usb_model.scale_shift): "monai" adds the time embedding to the
    # features (MONAI's DiffusionModelUNet as is); "scale_shift" modulates the normalised
    # features by (1 + scale) and shift, as the authors' published USB denoisers do.
    res_block: str = "monai"


@dataclass
class ScheduleConfig:
    """The forward process: linear betas over T training steps (paper: 1e-4 .. 2e-2, T = 1024)."""

    num_train_timesteps: int = 1024
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    schedule: str = "linear_beta"
    # What the denoisers output (part of the architecture: weights trained for one are wrong for
    # the other): "epsilon", the noise (the paper, the authors' checkpoints), or "v_prediction",
    # v = sqrt(abar) eps - sqrt(1 - abar) z0 (Salimans & Ho 2022), whose target stays well scaled
    # at both ends of the schedule. Sampling and guidance convert either to eps (Diffusion.to_eps).
    prediction_type: str = "epsilon"


@dataclass
class SamplingConfig:
    """Reverse-process and guidance parameters; every value is a default the CLI can override.

    ``steps`` is the number of DDIM steps for generation from noise (upstream: 300, which is a
    stride of 1024 // 300 = 3). Editing starts at ``t_start_heal`` / ``t_start_embed`` and walks
    down with ``edit_stride`` (upstream: 1). ``alpha0`` and ``k`` shape Anatomy Consistency
    Guidance (eq. 12); ``lcg_eta`` is the paper's eta of Lesion Consistency Guidance (eq. 14);
    ``ddim_eta`` is DDIM's stochasticity (0 = deterministic), a different quantity.
    """

    steps: int = 300
    t_start_heal: int = 300
    t_start_embed: int = 500
    edit_stride: int = 1
    alpha0: float = 20.0
    k: float = 0.5
    lcg_eta: float = 1.0
    lcg_pool: int = 3  # AvgPool kernel (latent voxels) that softens the lesion map for LCG
    ddim_eta: float = 0.0
    acg: bool = True
    lcg: bool = True
    mask_threshold: float = 0.5
    # Healing modes (usb_model.tasks.USB.heal): "mask" regenerates a known lesion, "detect"
    # finds the lesion first (no mask given), "acg" is the paper's mask-free ACG healing;
    # "auto" is "mask" with a mask and "detect" without.
    heal_mode: str = "auto"
    # What the lesion is filled with before encoding (usb_model.fill): "auto" (the white-matter
    # fill for lesions in white matter, the template graft elsewhere) scored best with
    # fill_residual in benchmarks/healing.py (healing-residual.json, 12 scans).
    heal_fill: str = "auto"
    # Inside the lesion: False, the decoded healed brain; True, the fill plus the model's change
    # to it (decode(healed) - decode(filled)), so the fill's own detail (at the scan's resolution
    # in the app) survives the autoencoder's blur. True: +0.5 dB lesion PSNR over all lesions and
    # native-resolution texture; the decoded brain stays ahead on cortical-subcortical infarcts.
    fill_residual: bool = True
    # Start of mask-aware healing (t_start_heal is the paper's ACG healing's); benchmarks/healing.py sweep.
    t_start_mask: int = 100
    # Stride of mask-aware healing (mask and detect modes) from t_start_mask; None: edit_stride.
    # Its own field so that a converted checkpoint keeps the paper's stride 1 for ACG healing
    # while mask mode, this project's, walks t = 100..0 in 34 DDIM steps as the demo model does
    # (34 and 51 steps scored 15.36 and 15.38 dB there: docs/ae-passes.md).
    mask_stride: int | None = None
    # Blend band around the lesion: weight 1 inside the first distance (mm), 0 beyond the second.
    # In the band the input gets the model's decoded change: it cleans a rim the mask missed and
    # blurs tissue the mask did not miss. benchmarks/residual_variants.py on 12 native scans: the
    # former (1, 4) cost tissue Dice near exact masks (0.748 against 0.831 without a band);
    # (0, 2) kept most of it (0.811) and most of the wide band's gain on masks 1 mm short of
    # the lesion (13.97 dB against 14.14 with (1, 4) and 13.19 without a band; Dice 0.811).
    band_mm: tuple[float, float] = (0.0, 2.0)
    detect_t_start: int = 400  # noise level of the healing pass whose departure from the input is the anomaly map
    detect_threshold: float = 0.1  # anomaly (decoded, [0, 1] intensity) above which a voxel is lesion
    detect_min_ml: float = 1.0  # smaller connected components are not lesions
    # Which departures of the free pass count (usb_model.detection.anomaly_map): "any" (its
    # magnitude), "brighter" (only where healing brightens, as it does a T1w lesion, darker than
    # the tissue it replaced) or "darker" (a FLAIR or T2 lesion); and the map's Gaussian
    # smoothing in model voxels.
    detect_polarity: str = "any"
    detect_sigma_vox: float = 0.7


@dataclass(frozen=True)
class EditParameters:
    """The sampling choices of one heal or embed run; None means "the checkpoint's value"
    (``SamplingConfig``). One object from the command line (``bids_usb.config``) through the
    workflow to ``USB.heal``/``USB.embed`` and the sidecars; ``steps`` is turned into the stride
    that walks from the image's ``t_start`` to 0 in about that many steps (``diffusion.stride_for_steps``)."""

    mode: str | None = None  # heal: auto | mask | detect | acg
    fill: str | None = None  # heal: graft | wm | none
    fill_residual: bool | None = None  # heal (mask, detect): the fill plus the model's change inside the lesion
    ae_passes: str | None = None  # heal (mask): autoencoder passes over the edit region's box ("edit") or all ("full")
    t_start: int | None = None
    steps: int | None = None
    stride: int | None = None
    alpha0: float | None = None
    k: float | None = None
    lcg_eta: float | None = None
    ddim_eta: float | None = None
    acg: bool | None = None
    lcg: bool | None = None
    detect_threshold: float | None = None
    detect_min_ml: float | None = None
    band_mm: tuple[float, float] | None = None  # the blend band around the edit: full weight to inner, none past outer

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def overrides(self) -> dict[str, Any]:
        """The values that were set, by name."""
        return {name: getattr(self, name) for name in self.names() if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EditParameters:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(unknown)}")
        return cls(**values)


@dataclass
class TrainingConfig:
    """Optimisation settings for the three training stages (VAE, USB_lesion, USB_brain)."""

    batch_size: int = 8
    vae_lr: float = 5e-5
    vae_kl_weight: float = 1e-8
    vae_adv_weight: float = 1e-3
    vae_perceptual_weight: float = 2e-3
    vae_mask_fraction: float = 0.25  # share of VAE batches that are lesion masks, not images
    # Edge of the random cubic crop the VAE trains on (0: the whole grid). The VAE is fully
    # convolutional, so crops teach the same mapping for a fraction of the compute per step;
    # must be a multiple of the downsampling factor.
    vae_patch: int = 0
    # Whether the autoencoder stage trains the encoder. False trains the decoder alone: the
    # latent space stays exactly the one the denoisers learnt on, so a finished model's decoder
    # can be trained further (``usb-train --init-checkpoint``) without retraining its denoisers.
    vae_train_encoder: bool = True
    # Decay of an EMA of the autoencoder's weights (0: none, the checkpoint holds its online
    # weights, as every run before 2026-12-08 did). The decoder-only campaign phases read their
    # held-out PSNR off single saves of the online weights, which move by tenths of a dB from one
    # save to the next; the EMA is what the checkpoint then holds, and the denoiser stages train
    # on it. The warm-up is the denoisers' (``ema_decay``'s).
    vae_ema_decay: float = 0.0
    # Weight of a term that holds the encoder's latents near those of the autoencoder the run
    # started from: the mean squared difference of the two posterior means, in the scaled (unit
    # variance) latent units the denoisers see. 0: none. With it an encoder can be trained on a
    # finished model (``usb-train --init-checkpoint``) while its denoisers stay close to valid: the
    # bundled decoder draws held-out brains at 33.9 dB from freely fitted latents but 28.9 dB from
    # the encoder's, and at 30.0 dB from latents within 5 % of the encoder's
    # (benchmarks/decoder_inversion.py).
    vae_latent_anchor: float = 0.0
    diffusion_lr: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    healthy_fraction: float = 0.2  # share of samples teaching the empty-lesion condition
    # Whether the lesion stage also trains on the healthy items (empty mask). True is the
    # paper's mix: paired sampling then draws "no lesion" about as often as training did, and
    # on a CPU-sized latent, where a median lesion is a few latent voxels, far more often
    # (11 of 16 pairs empty from the 2026-12-06 campaign model). False: the lesion net learns
    # lesions only, so every pair carries one; the brain stage still teaches the empty
    # condition, which is all healing and detection use.
    lesion_healthy_items: bool = True
    empty_condition: str = "encoded"  # "encoded": VAE latent of an all-zero mask; or "zeros"
    latent_injection: float = 0.0  # upstream's -0.05 * x0 shift of the brain latent; off by default
    # The lesion net's one-step estimate x0_hat conditions the brain net; at large t it is the
    # noise amplified by 1/sqrt(abar_t) (|x0_hat| in the hundreds at t ~ 1000). It is clamped to
    # +-condition_clip (latents have unit std) in training and sampling alike; 0 turns it off.
    condition_clip: float = 5.0
    sigmoid_weighting: bool = False  # upstream's sigmoid(cond) voxel weighting; off by default
    antithetic_timesteps: bool = True
    # Fine-tuning for the range the edits run in: this share of the batch's timestep draws
    # (antithetic pairs alike) lies below timestep_focus_max, the rest stays uniform over all T.
    # Healing starts at t_start 100-300, detection's free pass at 400 and embedding at 500, so a
    # focus below 512 spends most steps where those tasks use the brain net, while the uniform
    # rest keeps sampling from noise working. 0 turns it off (uniform, the paper's loss).
    timestep_focus: float = 0.0
    timestep_focus_max: int = 512
    mixed_precision: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    # Learning rate within each stage: "constant", or "cosine" from the stage's base rate down to
    # lr_min_ratio of it over lr_decay_steps steps of that stage (then held). A pure function of
    # the stage's step, so a resumed run continues the same curve whatever --steps asks for.
    # With a constant 5e-4 the f2c4 autoencoder's held-out PSNR wandered by 3 dB between saves.
    lr_schedule: str = "constant"
    lr_decay_steps: int = 0
    lr_min_ratio: float = 0.02
    # Min-SNR-gamma loss weighting of the denoisers (Hang et al. 2023): each sample's loss is
    # weighted by min(SNR_t, gamma) / SNR_t (eps) or / (SNR_t + 1) (v), so the low-noise steps
    # that dominate the plain loss stop crowding out the rest; 0 turns it off (the paper's loss).
    min_snr_gamma: float = 0.0
    # Denoiser stages on cached latents (usb_model.train.latents): this many training triplets
    # are synthesised and encoded once per autoencoder, with their left-right mirror images, and
    # the denoisers train on the cache (no synthesis or encoder per step); 0: encode every step.
    latent_cache: int = 0


@dataclass
class USBConfig:
    name: str = "custom"
    grid: GridConfig = field(default_factory=GridConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        f = self.autoencoder.downsample_factor
        if any(s % f for s in self.grid.shape):
            raise ValueError(
                f"grid shape {self.grid.shape} is not divisible by the autoencoder's "
                f"downsampling factor {f}; choose a shape that is a multiple of {f}"
            )
        return (self.autoencoder.latent_channels, *(s // f for s in self.grid.shape))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> USBConfig:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in sections:
                raise ValueError(f"unknown configuration section {key!r}")
            if key == "name":
                kwargs[key] = value
            else:
                kwargs[key] = _build(_SECTION_TYPES[key], value)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> USBConfig:
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        return cls.from_dict(json.loads(text))

    def replace(self, **sections: Any) -> USBConfig:
        """A copy with some fields of some sections changed: ``cfg.replace(sampling={"k": 1})``."""
        data = self.to_dict()
        for name, updates in sections.items():
            if name == "name":
                data["name"] = updates
            else:
                data[name].update(updates)
        return USBConfig.from_dict(data)


_SECTION_TYPES = {
    "grid": GridConfig,
    "autoencoder": AutoencoderConfig,
    "denoiser": DenoiserConfig,
    "schedule": ScheduleConfig,
    "sampling": SamplingConfig,
    "training": TrainingConfig,
}


def _build(kind: type, values: dict[str, Any]):
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} field(s): {', '.join(sorted(unknown))}")
    converted = {}
    for key, value in values.items():
        # JSON has no tuples; the dataclasses use tuples so configs are hashable and immutable-ish.
        converted[key] = tuple(value) if isinstance(value, list) else value
    return kind(**converted)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> USBConfig:
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return USBConfig.from_json(path)


def load_config(name_or_path: str | Path) -> USBConfig:
    """A preset name (``paper``, ``tiny``) or the path of a config JSON."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return USBConfig.from_json(path)
    return load_preset(str(name_or_path))
