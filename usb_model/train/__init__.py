"""Training USB: the shared KL autoencoder, then USB_lesion, then USB_brain; resumable, CPU or
GPU, single process or DDP under torchrun.

The losses and the paper (Wang & Liu, USB):

- Autoencoder (not an equation of the paper; the LDM recipe upstream follows):
  ``MSE(recon, v) + w_kl * KL(q(z|v) || N(0, I)) + w_adv * LSGAN_G(D(recon)) [+ w_perc * LPIPS_2.5D]``
  where ``v`` is a brain image or, for ``vae_mask_fraction`` of the samples, a lesion mask (one
  VAE encodes both). The 3D PatchGAN ``D`` is trained alongside with the least-squares loss.
- Eq. (10), ``L_lesion = E || eps_x - f_x(x_t, cond, t) ||^2`` with ``x_0`` the mask latent.
  The paper writes the condition as the brain estimate ``y0_hat``; like upstream, and like the
  sampler in ``tasks.py``, the condition here is the NOISY brain latent ``y_t`` at the same ``t``
  (independent noise).
- Eq. (11), ``L_brain = E || eps_y - f_y(y_t, x0_hat, t) ||^2`` with ``y_0`` the lesioned-brain
  latent and ``x0_hat`` the one-step estimate of the FROZEN lesion net (its EMA weights) at the
  same ``t``, fed ``[x_t, y_t]`` exactly as at sampling time.

Deviations from the paper, on purpose:

- ``healthy_fraction`` of the brain net's samples are healthy: target = the healthy latent,
  condition = ``USBNetworks.empty_condition`` (the encoded empty mask, or zeros). The paper heals
  with an empty condition it never trains on; here the brain net learns it.
- The latent scale is ``1 / std`` of encoder posterior means of training images, computed after
  the autoencoder stage and stored in ``networks.latent_scale``, not Stable Diffusion's 0.18215.
- Upstream's latent injection (``y_0 - 0.05 x_0``) and ``sigmoid(cond)`` voxel weighting are
  options of ``TrainingConfig``, off by default.
- The discriminator uses instance norm, not batch norm: per-GPU batches are 1-2 volumes at
  160^3, real and fake go through one forward, and there are no running statistics to sync.
- The EMA decay warms up as ``min(decay, (1 + n) / (10 + n))`` so early checkpoints are not
  dominated by the random initialisation.
- The learning rates are constant (upstream's ReduceLROnPlateau is not used).

A training directory holds::

    checkpoint/   save_checkpoint(): the model for inference (EMA denoiser weights) and, by
                  default, the MNI template on the grid (what the BIDS App registers to)
    state/        trainer.safetensors + trainer.json: online weights, EMA, discriminator,
                  optimizers, per-stage step counters and seconds, seed (no pickle anywhere)
    log.tsv       one row per logged step: stage, step, loss terms (means over the steps since
                  the previous row and over ranks), lr, seconds (cumulative training time of the
                  stage, saves excluded, carried across resumes)

Every random draw of step ``s`` of a stage comes from generators seeded by
``(seed, stage, s, rank)`` and every batch from the index sharding of that step, so a resumed
run repeats an uninterrupted one exactly (on the same device and world size).
"""

from .data import ShardedBatchSampler, batches, collate_triplets
from .distributed import Distributed, setup_distributed
from .ema import EMA
from .log import LOG_COLUMNS, read_log
from .losses import (
    autoencoder_loss,
    brain_inputs,
    brain_loss,
    build_discriminator,
    build_perceptual,
    discriminator_loss,
    kl_divergence,
    lesion_loss,
    perceptual_weights_available,
)
from .trainer import STAGES, Trainer, latent_std, train_all, train_autoencoder, train_brain, train_lesion

__all__ = [
    "STAGES",
    "LOG_COLUMNS",
    "Trainer",
    "EMA",
    "Distributed",
    "ShardedBatchSampler",
    "train_all",
    "train_autoencoder",
    "train_lesion",
    "train_brain",
    "autoencoder_loss",
    "discriminator_loss",
    "lesion_loss",
    "brain_inputs",
    "brain_loss",
    "kl_divergence",
    "latent_std",
    "build_discriminator",
    "build_perceptual",
    "perceptual_weights_available",
    "batches",
    "collate_triplets",
    "setup_distributed",
    "read_log",
]
