"""How well the autoencoder reconstructs brains it never saw: encode, decode, no diffusion.

Everything USB outputs passes through the decoder, so its reconstruction error is a floor under
every healing and generation result. This measures PSNR (data range 1), SSIM and mean absolute
error inside the brain on held-out synthetic healthy brains (usb_model.synth with seed
7_000_003; training uses seed 0), and on the lesioned versions of the same brains. The lesion
masks of the same items go through it too (``mask``: mean squared error over the volume, Dice at
the sampler's 0.5): training mixes masks with brains, and a decoder can gain on one and lose on
the other.

    python benchmarks/autoencoder.py --model DIR [--n 8] [--out benchmarks/results/autoencoder.json]

``DIR`` is a checkpoint directory (or a ``usb-train`` output directory: its ``checkpoint/``).
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

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, load_checkpoint  # noqa: E402
from usb_model.metrics import dice, masked_l1, masked_psnr, masked_ssim  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402

TEST_SEED = 7_000_003


def held_out(cfg, n: int) -> TripletDataset:
    """The held-out items every reconstruction benchmark scores (each item's brain before its lesion
    is drawn in, and the lesioned one); the diagnostics read the same brains."""
    return TripletDataset(cfg.grid, n, TEST_SEED, healthy_fraction=0.0, contrast=cfg.grid.contrast)


@torch.no_grad()
def reconstruction_scores(networks, n: int, reference=None) -> dict:
    """``reference``: another model whose encoder the denoisers learnt on; each brain's latent is
    then also compared with its latent there (``latent_drift``: the RMS difference over the RMS of
    the reference latent), which says how far a retrained encoder moved the denoisers' space."""
    cfg = networks.cfg
    data = held_out(cfg, n)
    rows = []
    for i in range(n):
        item = data[i]
        for kind in ("healthy", "lesioned"):
            x = item[kind][None]
            latent = networks.encode(x)
            recon = networks.decode(latent).clamp(0, 1)[0, 0].numpy()
            truth = x[0, 0].numpy()
            brain = item["healthy"][0].numpy() > 0
            rows.append(
                {
                    "case": i,
                    "kind": kind,
                    "psnr_brain": masked_psnr(recon, truth, brain, data_range=1.0),
                    "ssim_brain": masked_ssim(recon, truth, brain, data_range=1.0),
                    "l1_brain": masked_l1(recon, truth, brain),
                }
            )
            if reference is not None:
                theirs = reference.encode(x)
                rows[-1]["latent_drift"] = float((latent - theirs).norm() / theirs.norm())
        mask = item["mask"][None]
        decoded = networks.decode(networks.encode(mask)).clamp(0, 1)[0, 0].numpy()
        truth = mask[0, 0].numpy()
        rows.append(
            {
                "case": i,
                "kind": "mask",
                "mse": float(np.mean((decoded - truth) ** 2)),
                "dice": dice(decoded > 0.5, truth > 0.5),
            }
        )
    summary = {"mask": {m: float(np.mean([r[m] for r in rows if r["kind"] == "mask"])) for m in ("mse", "dice")}}
    for kind in ("healthy", "lesioned"):
        sel = [r for r in rows if r["kind"] == kind]
        summary[kind] = {m: float(np.mean([r[m] for r in sel])) for m in ("psnr_brain", "ssim_brain", "l1_brain")}
        if reference is not None:
            summary[kind]["latent_drift"] = float(np.mean([r["latent_drift"] for r in sel]))
    return {"cases": rows, "summary": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--latent-reference",
        type=Path,
        help="a model whose latents to compare with (the encoder the denoisers learnt on), e.g. resources/models/demo",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "autoencoder.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    directory = checkpoint_directory(args.model)
    networks = load_checkpoint(directory).eval()
    clock = time.perf_counter()
    reference = load_checkpoint(checkpoint_directory(args.latent_reference)).eval() if args.latent_reference else None
    result = reconstruction_scores(networks, args.n, reference)
    meta = json.loads((directory / "meta.json").read_text())
    result["environment"] = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(directory),
        "trained_steps": meta.get("notes", {}).get("trained_steps"),
        "autoencoder": networks.cfg.to_dict()["autoencoder"],
        "n": args.n,
        "latent_reference": str(args.latent_reference) if args.latent_reference else None,
        "test_seed": TEST_SEED,
        "seconds": round(time.perf_counter() - clock, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    for kind, s in result["summary"].items():
        if kind == "mask":
            print(f"{kind:9s} MSE {s['mse']:.5f}  Dice at 0.5 {s['dice']:.3f}")
        else:
            drift = f"  latent drift {s['latent_drift']:.1%}" if "latent_drift" in s else ""
            print(f"{kind:9s} PSNR {s['psnr_brain']:.2f} dB  SSIM {s['ssim_brain']:.3f}  L1 {s['l1_brain']:.4f}{drift}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
