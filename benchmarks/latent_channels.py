"""What each latent channel of the autoencoder carries, on the held-out brains.

The autoencoder's KL term (``training.vae_kl_weight`` times the KL summed over the latent) is
weighed against a reconstruction error that is a *mean* over voxels. At the demo model's 1e-8 a
channel that carries a brain costs about as much KL as the whole reconstruction error, so the
training may leave channels unused: posterior collapse, each unused channel's posterior the prior
(sigma near 1, mean near 0), and the decoder learns to ignore it. (The latent diffusion paper's
autoencoders sum their reconstruction error over pixels, which at this grid is a KL weight about
2600 times smaller.) This reads, per channel, inside the brain's footprint on the latent grid:

- ``mu_std``: the spread of the posterior means (what the denoisers see, before the latent scale);
- ``sigma_mean``: the posterior's mean standard deviation (1: the prior, nothing encoded);
- ``kl_per_element``: the KL the channel pays per latent voxel;
- ``zeroed_psnr``: the decode with that channel's means set to zero against the full decode (dB;
  high: the decoder does not read the channel);
- ``drift`` (with ``--latent-reference``): the RMS change of the channel's scaled latent from the
  reference encoder's, over the reference's RMS.

    python benchmarks/latent_channels.py --model DIR [--n 4] [--latent-reference resources/models/demo]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoder import TEST_SEED, held_out  # noqa: E402

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, load_checkpoint  # noqa: E402


@torch.no_grad()
def channel_scores(networks, n: int, reference=None) -> list[dict]:
    """Per channel, the figures above averaged over ``n`` held-out lesioned brains."""
    data = held_out(networks.cfg, n)
    per_case = []
    for i in range(n):
        item = data[i]
        x = item["lesioned"][None]
        mu, sigma = networks.autoencoder.encode(x)
        brain = F.interpolate(item["healthy"][None].gt(0).float(), size=mu.shape[2:], mode="trilinear")[0, 0] > 0.5
        voxels = x[0, 0] > 0
        full = networks.autoencoder.decode(mu)
        theirs = reference.autoencoder.encode(x)[0] if reference is not None else None
        rows = []
        for c in range(mu.shape[1]):
            m, s = mu[0, c][brain], sigma[0, c][brain]
            zeroed = mu.clone()
            zeroed[:, c] = 0
            change = (networks.autoencoder.decode(zeroed) - full)[0, 0][voxels]
            row = {
                "mu_std": float(m.std()),
                "sigma_mean": float(s.mean()),
                "kl_per_element": float((0.5 * (m**2 + s**2 - torch.log(s**2) - 1)).mean()),
                "zeroed_psnr": float(10 * torch.log10(1.0 / change.pow(2).mean().clamp_min(1e-12))),
            }
            if theirs is not None:
                ours = m * networks.latent_scale
                ref = theirs[0, c][brain] * reference.latent_scale
                row["drift"] = float((ours - ref).norm() / ref.norm().clamp_min(1e-12))
            rows.append(row)
        per_case.append(rows)
    return [
        {k: float(np.mean([case[c][k] for case in per_case])) for k in per_case[0][c]} for c in range(len(per_case[0]))
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latent-reference", type=Path, help="the encoder the denoisers learnt on")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latent-channels.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter()
    directory = checkpoint_directory(args.model)
    networks = load_checkpoint(directory).eval()
    reference = load_checkpoint(checkpoint_directory(args.latent_reference)).eval() if args.latent_reference else None
    channels = channel_scores(networks, args.n, reference)
    result = {
        "channels": channels,
        "environment": {
            "model": str(args.model),
            "model_sha256": checkpoint_sha256(directory),
            "kl_weight": networks.cfg.training.vae_kl_weight,
            "latent_reference": str(args.latent_reference) if args.latent_reference else None,
            "n": args.n,
            "test_seed": TEST_SEED,
            "seconds": round(time.perf_counter() - clock, 1),
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    for c, row in enumerate(channels):
        drift = f"  drift {row['drift']:.1%}" if "drift" in row else ""
        print(
            f"channel {c}: mu std {row['mu_std']:.3f}  sigma {row['sigma_mean']:.3f}  KL {row['kl_per_element']:.3f}"
            f"  zeroed {row['zeroed_psnr']:.1f} dB{drift}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
