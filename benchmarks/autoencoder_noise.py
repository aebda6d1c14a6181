"""How much of the autoencoder's reconstruction error is the synthetic brains' own voxel noise.

The held-out brains of ``benchmarks/autoencoder.py`` carry Gaussian voxel noise (``usb_model.synth.
intensity``: std drawn uniformly up to 0.03 of the brain's top intensity). A 2:1-compressing
autoencoder cannot carry white noise through its latent, so its PSNR against the noisy brain has
a floor that no decoder training lifts. This rebuilds each held-out healthy brain a second time
with the same random draws but the noise term zeroed (same seed, same items), and scores the same
reconstruction against both:

- ``psnr_noisy``: against the brain as synthesised (what autoencoder.py reports);
- ``psnr_clean``: against its noise-free twin;
- ``noise_psnr``: the noisy brain against its noise-free twin (the noise alone).

The twin's intensity scale is fitted to the noisy brain by least squares inside the brain, because
the final rescale to the top intensity reads a percentile that the noise moves.

    python benchmarks/autoencoder_noise.py --model DIR [--n 8] [--out benchmarks/results/reconstruction-noise.json]
"""

from __future__ import annotations

import argparse
import copy
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
from usb_model.synth import healthy as synth_healthy  # noqa: E402


class _Silent:
    """A numpy Generator whose normal draws of an image's shape (the voxel noise; the bias field
    draws a few control points) come out as zeros, consuming the same stream."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...]):
        self._rng, self._shape = rng, tuple(shape)

    def standard_normal(self, size=None, *args, **kwargs):
        draw = self._rng.standard_normal(size, *args, **kwargs)
        return draw * 0 if np.shape(draw) == self._shape else draw

    def __getattr__(self, name):
        return getattr(self._rng, name)


class NoiseFreeTwins:
    """While active, every contrast augmentation also makes its noise-free twin (kept in ``last``)."""

    def __init__(self):
        self.last: np.ndarray | None = None
        self._real = synth_healthy.augment_contrast

    def __enter__(self):
        def twin(image, mask, rng, *args, **kwargs):
            quiet = _Silent(copy.deepcopy(rng), np.shape(image))
            self.last = self._real(np.array(image, copy=True), mask, quiet, *args, **kwargs)
            return self._real(image, mask, rng, *args, **kwargs)

        synth_healthy.augment_contrast = twin
        return self

    def __exit__(self, *exc):
        synth_healthy.augment_contrast = self._real


def fitted(clean: np.ndarray, noisy: np.ndarray, brain: np.ndarray) -> np.ndarray:
    scale = float((clean[brain] * noisy[brain]).sum() / max((clean[brain] ** 2).sum(), 1e-12))
    return np.clip(clean * scale, 0.0, 1.0)


@torch.no_grad()
def scores(networks, n: int) -> dict:
    data = held_out(networks.cfg, n)
    rows = []
    with NoiseFreeTwins() as twins:
        for i in range(n):
            item = data[i]
            noisy = item["healthy"][0].numpy()
            brain = noisy > 0
            clean = fitted(twins.last, noisy, brain)
            recon = networks.decode(networks.encode(item["healthy"][None])).clamp(0, 1)[0, 0].numpy()
            rows.append(
                {
                    "case": i,
                    "psnr_noisy": masked_psnr(recon, noisy, brain, data_range=1.0),
                    "psnr_clean": masked_psnr(recon, clean, brain, data_range=1.0),
                    "noise_psnr": masked_psnr(noisy, clean, brain, data_range=1.0),
                }
            )
    keys = ("psnr_noisy", "psnr_clean", "noise_psnr")
    return {"cases": rows, "summary": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reconstruction-noise.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    directory = checkpoint_directory(args.model)
    networks = load_checkpoint(directory).eval()
    clock = time.perf_counter()
    result = scores(networks, args.n)
    result["environment"] = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(directory),
        "n": args.n,
        "test_seed": TEST_SEED,
        "seconds": round(time.perf_counter() - clock, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"PSNR against the noisy brain {s['psnr_noisy']:.2f} dB, against its noise-free twin {s['psnr_clean']:.2f} dB;"
        f" the noise alone {s['noise_psnr']:.2f} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
