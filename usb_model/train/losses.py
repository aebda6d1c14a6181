"""The training objectives (paper eq. 10-11 and the autoencoder's) as pure functions, plus the
networks that exist only for training: the PatchGAN discriminator and the offline-only LPIPS.

Pure functions of explicit noise and timesteps, so tests can evaluate them on fixed draws.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss, PerceptualLoss
from monai.networks.nets import PatchDiscriminator
from torch import nn

from ..config import USBConfig
from ..diffusion import Diffusion

# torchvision file names of the LPIPS backbones (cached by torch.hub under checkpoints/).
_BACKBONE_FILES = {"alex": "alexnet-owt-*.pth", "vgg": "vgg16-*.pth", "squeeze": "squeezenet1_1-*.pth"}


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over a sample's latent, averaged over the batch."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


def autoencoder_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    z_mu: torch.Tensor,
    z_sigma: torch.Tensor,
    cfg: USBConfig,
    discriminator: nn.Module | None = None,
    perceptual: nn.Module | None = None,
    adversarial: PatchAdversarialLoss | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The generator side of the VAE objective; returns the total and its terms for the log."""
    tr = cfg.training
    recon_loss = F.mse_loss(recon.float(), x.float())
    kl = kl_divergence(z_mu.float(), z_sigma.float())
    total = recon_loss + tr.vae_kl_weight * kl
    terms = {"recon": recon_loss.item(), "kl": kl.item()}
    if discriminator is not None and tr.vae_adv_weight > 0:
        adversarial = adversarial or PatchAdversarialLoss(criterion="least_squares")
        adv = adversarial(discriminator(recon)[-1].float(), target_is_real=True, for_discriminator=False)
        total = total + tr.vae_adv_weight * adv
        terms["adv"] = adv.item()
    if perceptual is not None and tr.vae_perceptual_weight > 0:
        perc = perceptual(recon.float(), x.float())
        total = total + tr.vae_perceptual_weight * perc
        terms["perceptual"] = perc.item()
    terms["loss"] = total.item()
    return total, terms


def discriminator_loss(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, adversarial: PatchAdversarialLoss | None = None
) -> torch.Tensor:
    """Least-squares PatchGAN loss; real and fake share one forward (one DDP forward per backward)."""
    adversarial = adversarial or PatchAdversarialLoss(criterion="least_squares")
    logits = discriminator(torch.cat([fake.detach().to(real.dtype), real]))[-1].float()
    fake_logits, real_logits = logits.split(fake.shape[0])
    loss_fake = adversarial(fake_logits, target_is_real=False, for_discriminator=True)
    loss_real = adversarial(real_logits, target_is_real=True, for_discriminator=True)
    return 0.5 * (loss_fake + loss_real)


def denoising_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per sample, weighted per sample (min-SNR) when ``weight`` is given.

    ``target`` may be a voxel-weighted error already squared elsewhere; here it is the plain
    regression target of the schedule's prediction type (``Diffusion.target``)."""
    err = (pred.float() - target).pow(2).flatten(1).mean(1)
    return (err * weight).mean() if weight is not None else err.mean()


def lesion_loss(
    lesion_net: nn.Module,
    diffusion: Diffusion,
    x0: torch.Tensor,
    y0: torch.Tensor,
    t: torch.Tensor,
    eps_x: torch.Tensor,
    eps_y: torch.Tensor,
    min_snr_gamma: float = 0.0,
) -> torch.Tensor:
    """Eq. (10): predict the mask latent's noise (or velocity) from ``[x_t, y_t]`` (y_t: the noisy
    brain, same t)."""
    x_t = diffusion.add_noise(x0, eps_x, t)
    y_t = diffusion.add_noise(y0, eps_y, t)
    pred = lesion_net(torch.cat([x_t, y_t], dim=1), t)
    return denoising_loss(pred, diffusion.target(x0, eps_x, t), diffusion.loss_weight(t, min_snr_gamma))


@torch.no_grad()
def brain_inputs(
    frozen_lesion_net: nn.Module,
    diffusion: Diffusion,
    x0: torch.Tensor,
    y0: torch.Tensor,
    t: torch.Tensor,
    eps_x: torch.Tensor,
    eps_y: torch.Tensor,
    healthy: torch.Tensor,
    empty: torch.Tensor,
    latent_injection: float = 0.0,
    condition_clip: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y_t, condition, y0)`` for eq. (11); ``y0`` as noised (after latent injection), so the
    caller can form a velocity target.

    Lesioned samples are conditioned on the frozen lesion net's one-step estimate x0_hat from
    ``[x_t, y_t]``, the same inputs it sees when sampling pairs; healthy samples (``healthy`` is
    a boolean per sample; ``y0`` must already be their healthy latent) on ``empty`` itself.
    Latent injection shifts ``y0`` by ``-latent_injection * x0`` (x0 = empty for healthy ones).
    """
    pick = healthy.view(-1, *([1] * (x0.dim() - 1)))
    x0 = torch.where(pick, empty.expand_as(x0), x0)
    if latent_injection:
        y0 = y0 - latent_injection * x0
    x_t = diffusion.add_noise(x0, eps_x, t)
    y_t = diffusion.add_noise(y0, eps_y, t)
    output = frozen_lesion_net(torch.cat([x_t, y_t], dim=1), t).float()
    eps_x_hat = diffusion.to_eps(output, x_t, t)
    x0_hat = diffusion.brain_condition(x_t, eps_x_hat, t, condition_clip)
    return y_t, torch.where(pick, empty.expand_as(x0_hat), x0_hat), y0


def brain_loss(
    brain_net: nn.Module,
    y_t: torch.Tensor,
    condition: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    sigmoid_weighting: bool = False,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. (11): predict the brain latent's noise (or velocity: ``target``) from ``[y_t, condition]``;
    optional sigmoid(cond) voxel weights (upstream) and per-sample weights (min-SNR)."""
    pred = brain_net(torch.cat([y_t, condition], dim=1), t)
    if not sigmoid_weighting:
        return denoising_loss(pred, target, weight)
    err = ((pred.float() - target).pow(2) * torch.sigmoid(condition)).flatten(1).mean(1)
    return (err * weight).mean() if weight is not None else err.mean()


def build_discriminator(cfg: USBConfig) -> PatchDiscriminator:
    """3D PatchGAN with 3 layers, as wide as the autoencoder's first level."""
    return PatchDiscriminator(
        spatial_dims=3,
        channels=cfg.autoencoder.channels[0],
        in_channels=1,
        out_channels=1,
        num_layers_d=3,
        norm="INSTANCE",
    )


def perceptual_weights_available(network_type: str = "alex") -> tuple[bool, str]:
    """Whether 2.5D LPIPS can be built from files already on disk; never touches the network.

    LPIPS needs the ``lpips`` package (its linear heads ship inside it) and torchvision's
    backbone weights in the torch hub cache. Returns (available, reason if not).
    """
    for package in ("lpips", "torchvision"):
        if importlib.util.find_spec(package) is None:
            return False, f"the {package} package is not installed"
    spec = importlib.util.find_spec("lpips")
    heads = Path(spec.origin).parent / "weights" / "v0.1" / f"{network_type}.pth"
    if not heads.is_file():
        return False, f"LPIPS head weights {heads} are missing"
    pattern = _BACKBONE_FILES.get(network_type)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if pattern is None or not any(cache.glob(pattern)):
        return False, f"the {network_type} backbone weights are not in {cache}"
    return True, ""


def fetch_perceptual_weights(network_type: str = "alex") -> Path:
    """Download LPIPS's backbone weights into the torch hub cache, once, where the network is
    reachable (a login node, the container build); training then finds them offline.

    Raises RuntimeError naming the missing package when the ``train`` extra is not installed.
    """
    for package in ("lpips", "torchvision"):
        if importlib.util.find_spec(package) is None:
            raise RuntimeError(f"the {package} package is not installed; pip install 'bids-usb[train]'")
    import lpips

    lpips.LPIPS(net=network_type, pretrained=True, verbose=False)  # torchvision caches the backbone
    ok, reason = perceptual_weights_available(network_type)
    if not ok:
        raise RuntimeError(f"LPIPS weights still unavailable after fetching: {reason}")
    return Path(torch.hub.get_dir()) / "checkpoints"


def build_perceptual(cfg: USBConfig, device: torch.device, network_type: str = "alex") -> nn.Module | None:
    """2.5D LPIPS when its weights are on disk, else None with a warning (no download at run time)."""
    if cfg.training.vae_perceptual_weight <= 0:
        return None
    ok, reason = perceptual_weights_available(network_type)
    if not ok:
        warnings.warn(
            f"perceptual loss is off because its weights are not available offline ({reason}); "
            "the autoencoder trains on MSE + KL + adversarial terms only (to turn it on: "
            "pip install 'bids-usb[train]', then usb-train --fetch-perceptual once, online)",
            stacklevel=3,
        )
        return None
    loss = PerceptualLoss(spatial_dims=3, network_type=network_type, is_fake_3d=True, fake_3d_ratio=0.2)
    return loss.to(device).eval().requires_grad_(False)
