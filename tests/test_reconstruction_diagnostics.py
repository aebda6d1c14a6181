"""The reconstruction diagnostics: the noise-free twins of benchmarks/autoencoder_noise.py."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from autoencoder_noise import NoiseFreeTwins  # noqa: E402

from usb_model.config import GridConfig  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.synth import healthy as synth_healthy  # noqa: E402
from usb_model.synth.intensity import ContrastParams, augment_contrast  # noqa: E402

GRID = GridConfig(shape=(32, 32, 32), voxel_size=(6.0, 6.0, 6.0))


def test_a_noise_free_twin_is_the_same_brain_without_its_voxel_noise():
    rng = np.random.default_rng(5)
    image = rng.uniform(0.2, 1.0, (16, 16, 16)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[3:13, 3:13, 3:13] = True
    params = ContrastParams(noise_std=0.03)
    with NoiseFreeTwins() as twins:
        noisy = synth_healthy.augment_contrast(image.copy(), mask, np.random.default_rng(9), params)
        twin = twins.last
    # The same draws, the noise zeroed: exactly what the augmentation gives without noise.
    quiet = augment_contrast(image.copy(), mask, np.random.default_rng(9), dataclasses.replace(params, noise_std=0.0))
    np.testing.assert_array_equal(twin, quiet)
    # ...and the real stream is untouched: the noisy brain is what it is without the twins.
    np.testing.assert_array_equal(noisy, augment_contrast(image.copy(), mask, np.random.default_rng(9), params))
    assert not np.array_equal(noisy, twin)
    assert synth_healthy.augment_contrast is augment_contrast  # restored on exit


def test_the_twins_leave_the_dataset_items_as_they_are():
    data = TripletDataset(GRID, length=2, seed=3, healthy_fraction=0.0)
    plain = data[1]
    with NoiseFreeTwins() as twins:
        again = data[1]
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    assert twins.last is not None and twins.last.shape == tuple(GRID.shape)


def test_a_channel_the_decoder_does_not_read_shows_as_collapsed(tiny_cfg):
    """benchmarks/latent_channels.py: zeroing a channel whose decoder weights are zero leaves the
    decode as it is (infinite PSNR, capped), a read channel changes it; drift from itself is 0."""
    from latent_channels import channel_scores

    from usb_model.networks import USBNetworks

    torch.manual_seed(0)
    networks = USBNetworks(tiny_cfg).eval()
    with torch.no_grad():
        networks.autoencoder.post_quant_conv.conv.weight[:, 0] = 0  # the decoder ignores channel 0
    rows = channel_scores(networks, 1, reference=networks)
    assert len(rows) == tiny_cfg.autoencoder.latent_channels
    assert rows[0]["zeroed_psnr"] >= 100 > max(r["zeroed_psnr"] for r in rows[1:])
    assert all(r["drift"] == 0 and r["sigma_mean"] > 0 for r in rows)
