"""Which half of the autoencoder holds its reconstruction PSNR down: the encoder or the decoder.

The campaign's decoder-only phases train the decoder on the frozen encoder (the denoisers' latent
space stays valid). If the encoder's latent has already lost what the brains need, no decoder
reaches the 30 dB target; if the decoder cannot draw it from any latent, a better encoder would
not help either. This asks the decoder alone: for each held-out brain (the items of
``benchmarks/autoencoder.py``), start from the encoder's latent and fit the latent itself by Adam
to minimise the decoder's squared error inside the brain, the decoder fixed. The PSNR the fitted
latent reaches is what this decoder can draw (a lower bound: the fit stops after ``--iterations``);
the gap from the encoder's latent is what the encoder loses. ``latent_moved`` (the fitted latent's
distance from the encoder's inside the brain's footprint, relative to the latter's norm there) says
how far such latents lie from the ones the denoisers learnt on.

    python benchmarks/decoder_inversion.py --model DIR [--n 4] [--iterations 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoder import TEST_SEED, held_out  # noqa: E402

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, load_checkpoint  # noqa: E402
from usb_model.metrics import masked_psnr  # noqa: E402


def invert(
    networks, volume: torch.Tensor, brain: torch.Tensor, iterations: int, lr: float, proximal: float = 0.0
) -> tuple[list, torch.Tensor]:
    """The latent that the decoder turns into ``volume`` best (inside ``brain``), from the encoder's;
    ``proximal`` weighs the mean squared distance from the encoder's latent against the error."""
    with torch.no_grad():
        start = networks.encode(volume)
    latent = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=lr)
    trace = []
    for i in range(iterations):
        optimiser.zero_grad(set_to_none=True)
        error = ((networks.decode(latent) - volume) ** 2)[brain].mean()
        (error + proximal * ((latent - start) ** 2).mean()).backward()
        optimiser.step()
        if i % 25 == 0 or i == iterations - 1:
            trace.append([i, float(10 * np.log10(1.0 / max(float(error.detach()), 1e-12)))])
    return trace, latent.detach()


def scores(networks, n: int, iterations: int, lr: float, proximal: float = 0.0) -> dict:
    data = held_out(networks.cfg, n)
    networks.requires_grad_(False)
    rows = []
    for i in range(n):
        volume = data[i]["healthy"][None]
        brain = volume > 0
        truth = volume[0, 0].numpy()
        with torch.no_grad():
            encoded = networks.decode(networks.encode(volume)).clamp(0, 1)[0, 0].numpy()
        trace, latent = invert(networks, volume, brain, iterations, lr, proximal)
        with torch.no_grad():
            fitted = networks.decode(latent).clamp(0, 1)[0, 0].numpy()
            start = networks.encode(volume)
            # Within the brain's footprint on the latent grid: Adam's normalised steps also move
            # latent voxels outside it, whose tiny gradients reach the loss only at the brain's rim.
            inside = torch.nn.functional.adaptive_max_pool3d(brain.float(), start.shape[2:]).expand_as(start) > 0
            moved = float((latent - start)[inside].norm() / start[inside].norm())
        mask = brain[0, 0].numpy()
        rows.append(
            {
                "case": i,
                "psnr_encoded": masked_psnr(encoded, truth, mask, data_range=1.0),
                "psnr_fitted": masked_psnr(fitted, truth, mask, data_range=1.0),
                "latent_moved": moved,
                "trace": trace,
            }
        )
        print(
            f"brain {i}: encoder's latent {rows[-1]['psnr_encoded']:.2f} dB, fitted {rows[-1]['psnr_fitted']:.2f} dB"
            f" (the latent moved {moved:.1%} of its norm)"
        )
    keys = ("psnr_encoded", "psnr_fitted", "latent_moved")
    return {"cases": rows, "summary": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument(
        "--proximal", type=float, default=0.0, help="weight of the fitted latent's squared distance from the encoder's"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decoder-inversion.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    directory = checkpoint_directory(args.model)
    networks = load_checkpoint(directory).eval()
    clock = time.perf_counter()
    result = scores(networks, args.n, args.iterations, args.lr, args.proximal)
    result["environment"] = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(directory),
        "n": args.n,
        "iterations": args.iterations,
        "lr": args.lr,
        "proximal": args.proximal,
        "test_seed": TEST_SEED,
        "seconds": round(time.perf_counter() - clock, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"decoder from the encoder's latent {s['psnr_encoded']:.2f} dB; from a fitted latent {s['psnr_fitted']:.2f} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
