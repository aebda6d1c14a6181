"""The three networks of USB, built from MONAI's generative blocks.

One KL autoencoder maps both brain images and lesion masks to latents; two denoisers of the
same shape (USB_lesion, USB_brain) predict noise in that latent space. Each denoiser is
conditioned by channel concatenation only: its input is ``[z_t, cond]``.
"""

from __future__ import annotations

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.nets.autoencoderkl import Decoder
from torch import nn

from .config import USBConfig
from .scale_shift import RES_BLOCKS, use_scale_shift


def build_autoencoder(cfg: USBConfig) -> AutoencoderKL:
    ae = cfg.autoencoder
    levels = len(ae.channels)
    autoencoder = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(ae.channels),
        latent_channels=ae.latent_channels,
        num_res_blocks=(ae.num_res_blocks,) * levels,
        norm_num_groups=ae.norm_num_groups,
        attention_levels=tuple(ae.attention_levels),
        # Upstream's VAE has no attention at all; MONAI adds non-local attention at the
        # bottleneck by default, which costs memory at 160^3 and is not in the paper.
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )
    if ae.decoder_width != 1:
        autoencoder.decoder = build_decoder(cfg)
    return autoencoder


def build_decoder(cfg: USBConfig) -> Decoder:
    """The autoencoder's decoder at ``decoder_width`` times the encoder's channels and groups.

    The groups scale with the channels so that a group holds as many channels as before: that
    is what lets ``usb_model.train.widen`` copy a narrow decoder into a wide one exactly.
    """
    ae = cfg.autoencoder
    width = ae.decoder_width
    if width < 1:
        raise ValueError(f"autoencoder decoder_width must be a positive integer, got {width}")
    levels = len(ae.channels)
    return Decoder(
        spatial_dims=3,
        channels=tuple(c * width for c in ae.channels),
        in_channels=ae.latent_channels,
        out_channels=1,
        num_res_blocks=(ae.num_res_blocks,) * levels,
        norm_num_groups=ae.norm_num_groups * width,
        norm_eps=1e-6,  # AutoencoderKL's own
        attention_levels=tuple(ae.attention_levels),
        with_nonlocal_attn=False,
    )


def build_denoiser(cfg: USBConfig) -> DiffusionModelUNet:
    dn = cfg.denoiser
    if dn.res_block not in RES_BLOCKS:
        raise ValueError(f"unknown denoiser res_block {dn.res_block!r}; choose one of {', '.join(RES_BLOCKS)}")
    latent = cfg.autoencoder.latent_channels
    unet = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=2 * latent,
        out_channels=latent,
        channels=tuple(dn.channels),
        attention_levels=tuple(dn.attention_levels),
        num_res_blocks=dn.num_res_blocks,
        num_head_channels=dn.num_head_channels,
        norm_num_groups=dn.norm_num_groups,
        with_conditioning=False,
    )
    return use_scale_shift(unet) if dn.res_block == "scale_shift" else unet


class USBNetworks(nn.Module):
    """The autoencoder and the two denoisers, plus the latent scale they were trained with.

    ``latent_scale`` multiplies encoder means so that latents have roughly unit variance (the
    diffusion schedule assumes it); it is computed from training latents and stored as a buffer
    so it travels with the weights.
    """

    def __init__(self, cfg: USBConfig):
        super().__init__()
        self.cfg = cfg
        self.autoencoder = build_autoencoder(cfg)
        self.lesion = build_denoiser(cfg)  # USB_lesion: eps_x = f_x(x_t, cond, t)
        self.brain = build_denoiser(cfg)  # USB_brain:  eps_y = f_y(y_t, cond, t)
        self.register_buffer("latent_scale", torch.tensor(1.0))

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """Image or mask (N, 1, *grid) in [0, 1] -> scaled latent mean (N, C, *latent_grid).

        The posterior mean, not a sample: editing must start from the input itself.
        """
        z_mu, _ = self.autoencoder.encode(volume)
        return z_mu * self.latent_scale

    def decode(self, latent: torch.Tensor, *, lean: bool = False) -> torch.Tensor:
        """Scaled latent -> image. ``lean``: one decoder block at a time, its convolutions in slabs
        (usb_model.lean): the same result with a fraction of the peak memory, for whole grids."""
        if lean:
            from .lean import lean_decode

            return lean_decode(self.autoencoder, latent / self.latent_scale)
        return self.autoencoder.decode(latent / self.latent_scale)

    def empty_condition(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The "no lesion" condition x_empty the brain net was trained with (see TrainingConfig)."""
        device = device if device is not None else self.latent_scale.device
        shape = (n, *self.cfg.latent_shape)
        if self.cfg.training.empty_condition == "zeros":
            return torch.zeros(shape, device=device)
        empty_mask = torch.zeros((1, 1, *self.cfg.grid.shape), device=device)
        return self.encode(empty_mask).expand(shape).contiguous()


def encoder_modules(autoencoder: nn.Module) -> list[nn.Module]:
    """The parts of a MONAI ``AutoencoderKL`` that map an image to its latent distribution."""
    return [autoencoder.encoder, autoencoder.quant_conv_mu, autoencoder.quant_conv_log_sigma]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
