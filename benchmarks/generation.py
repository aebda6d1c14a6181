"""Are generated pairs brains with plausible lesions? MMD/KID against held-out synthetic brains.

A model that generates noise blobs can still match an intensity histogram, so the generated
brains are compared with held-out healthy synthetic brains (usb_model.synth, seed 7_000_003;
training uses seed 0) in two feature spaces:

- ``intensity``: the 32-bin intensity histogram inside the brain (usb_model.metrics), the
  feature the group level's cohort distances use;
- ``shape``: the whole volume average-pooled to 8^3 (512 values): where tissue is, i.e. whether
  the sample is shaped like a brain at all.

Per feature: unbiased MMD^2 (RBF, median heuristic) and KID (polynomial kernel, torchmetrics),
with the same numbers for a second held-out set against the first (``reference``: what two
samples of real synthetic brains give, the floor) and for Gaussian-smoothed noise (a blob
generator, the ceiling a useless model reaches), and for the second held-out set passed through
the model's own autoencoder (``autoencoded``: the floor a perfect denoiser would reach, since
every generated volume is decoded; what lies between it and ``generated`` is the denoisers'). Also
per generated mask: its volume, the
number of connected components, and the fraction of it inside the template's parenchyma
(lesions belong in brain tissue, not in the ventricles or outside the brain).

    python benchmarks/generation.py --model DIR [--n 16] [--steps 50] [--device auto]
Writes benchmarks/results/generation-<device>.json and docs/figures/generation.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, read_meta  # noqa: E402
from usb_model.device import pick_device  # noqa: E402
from usb_model.metrics import dice, intensity_features, kid, mmd_rbf  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.tasks import USB  # noqa: E402
from usb_model.template import load_template  # noqa: E402

TEST_SEED = 7_000_003
POOL = 8  # the shape feature's grid per axis

ROOT = Path(__file__).resolve().parents[1]


def shape_features(volume: np.ndarray) -> np.ndarray:
    t = torch.as_tensor(np.asarray(volume, np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool3d(t, POOL).flatten().double().numpy()


def features(volumes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Both feature sets of each volume; the brain is where the volume exceeds 5 % of its max
    (generated brains carry no mask of their own)."""
    out = {"intensity": [], "shape": []}
    for v in volumes:
        brain = v > 0.05 * max(float(v.max()), 1e-6)
        out["intensity"].append(intensity_features(v, brain if brain.any() else None))
        out["shape"].append(shape_features(v))
    return {k: np.stack(v) for k, v in out.items()}


def distances(ref: dict[str, np.ndarray], other: dict[str, np.ndarray], seed: int) -> dict[str, dict[str, float]]:
    result = {}
    for name in ref:
        mean, std = kid(ref[name], other[name], subsets=50, subset_size=1000, seed=seed)
        result[name] = {"mmd_rbf": mmd_rbf(ref[name], other[name]), "kid_mean": mean, "kid_std": std}
    return result


def held_out_brains(cfg, n: int, offset: int) -> list[np.ndarray]:
    data = TripletDataset(cfg.grid, offset + n, TEST_SEED, healthy_fraction=1.0, contrast=cfg.grid.contrast)
    return [data[i]["healthy"][0].numpy() for i in range(offset, offset + n)]


def blobs(shape, n: int, seed: int) -> list[np.ndarray]:
    """Smoothed noise squashed to [0, 1]: what a model that learnt nothing of anatomy returns."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
        out.append(np.clip(0.5 + v / (4 * v.std()), 0, 1).astype(np.float32))
    return out


def held_out_masks(cfg, n: int) -> list[np.ndarray]:
    """Lesion masks as training draws them (every item lesioned), for the masks' own floor."""
    data = TripletDataset(cfg.grid, n, TEST_SEED, healthy_fraction=0.0, contrast=cfg.grid.contrast)
    return [data[i]["mask"][0].numpy() for i in range(n)]


@torch.no_grad()
def autoencoded(usb: USB, volumes: list[np.ndarray]) -> list[np.ndarray]:
    """Each volume encoded and decoded by the model's autoencoder, as generation decodes."""
    out = []
    for v in volumes:
        latent = usb._encode(torch.as_tensor(v, dtype=torch.float32)[None, None].to(usb.device))
        out.append(usb._decode(latent)[0, 0].cpu().numpy())
    return out


MASK_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def mask_summary(stats: list[dict]) -> dict:
    inside = [s["in_parenchyma"] for s in stats if s["in_parenchyma"] is not None]
    return {
        "empty": sum(s["volume_ml"] == 0 for s in stats),
        "median_volume_ml": float(np.median([s["volume_ml"] for s in stats])),
        "median_components": float(np.median([s["components"] for s in stats])),
        "mean_in_parenchyma": float(np.mean(inside)) if inside else None,
    }


def mask_stats(masks: list[np.ndarray], parenchyma: np.ndarray, voxel_ml: float) -> list[dict[str, float]]:
    rows = []
    for m in masks:
        m = m > 0.5
        _, components = ndimage.label(m)
        rows.append(
            {
                "volume_ml": float(m.sum()) * voxel_ml,
                "components": int(components),
                "in_parenchyma": float((m & parenchyma).sum() / m.sum()) if m.any() else None,
            }
        )
    return rows


def figure(images: list[np.ndarray], masks: list[np.ndarray], reference: list[np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(images))
    fig, axes = plt.subplots(2, cols + 1, figsize=(2.2 * (cols + 1), 4.6), squeeze=False)
    z = images[0].shape[2] // 2 + 4
    for row, axis in enumerate((2, 1)):  # axial, coronal
        for col in range(cols + 1):
            ax = axes[row, col]
            if col == 0:
                vol, mask, title = reference[0], None, "held-out synthetic"
            else:
                vol, mask, title = images[col - 1], masks[col - 1], f"generated {col}"
            index = z if axis == 2 else vol.shape[1] // 2
            plane = np.take(vol, index, axis=axis).T
            ax.imshow(plane, cmap="gray", origin="lower", vmin=0, vmax=1)
            if mask is not None:
                outline = np.take(mask, index, axis=axis).T > 0.5
                ax.contour(outline, levels=[0.5], colors="r", linewidths=0.7)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle("USB generate_pairs: brains and their lesion masks (red), one sample each", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=16, help="generated and held-out samples each")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the config's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "generation.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    directory = checkpoint_directory(args.model)
    usb = USB.from_checkpoint(directory, device=device)
    cfg = usb.cfg
    steps = args.steps or cfg.sampling.steps

    clock = time.perf_counter()
    images, masks = [], []
    for start in range(0, args.n, args.batch):
        result = usb.generate_pairs(min(args.batch, args.n - start), seed=args.seed + start, steps=steps)
        images += list(result.images.numpy())
        masks += list(result.masks.numpy())
    seconds = time.perf_counter() - clock

    reference = held_out_brains(cfg, args.n, 0)
    second = held_out_brains(cfg, args.n, args.n)
    ref_f = features(reference)
    template = load_template(cfg.grid)
    voxel_ml = float(np.prod(cfg.grid.voxel_size)) / 1000.0
    stats = mask_stats(masks, template.parenchyma, voxel_ml)
    true_masks = held_out_masks(cfg, args.n)
    threshold = cfg.sampling.mask_threshold
    decoded_masks = autoencoded(usb, true_masks)
    result = {
        "generated": distances(ref_f, features(images), args.seed),
        "reference": distances(ref_f, features(second), args.seed),
        "autoencoded": distances(ref_f, features(autoencoded(usb, second)), args.seed),
        "blobs": distances(ref_f, features(blobs(cfg.grid.shape, args.n, args.seed)), args.seed),
        "masks": {
            "per_sample": stats,
            **mask_summary(stats),
            "brain_volume_ml": float(template.brain_mask.sum()) * voxel_ml,
        },
        # What training draws (every item lesioned), as drawn and through the autoencoder at the
        # sampler's mask threshold: the floor the generated masks are read against.
        "masks_training": mask_summary(mask_stats(true_masks, template.parenchyma, voxel_ml)),
        "masks_autoencoded": mask_summary(
            mask_stats([(m > threshold).astype(np.float32) for m in decoded_masks], template.parenchyma, voxel_ml)
        ),
        # Is the sampler's threshold right for this autoencoder? Dice of the decoded training
        # masks with the masks themselves, at several thresholds (empty pairs count as 1).
        "mask_threshold_dice": {
            f"{t:.1f}": float(np.mean([dice(d > t, m > 0.5) for d, m in zip(decoded_masks, true_masks)]))
            for t in MASK_THRESHOLDS
        },
        "environment": {
            "model": str(args.model),
            "model_sha256": checkpoint_sha256(directory),
            "trained_steps": read_meta(directory).get("notes", {}).get("trained_steps"),
            "device": str(device),
            "n": args.n,
            "steps": steps,
            "ddim_eta": usb.cfg.sampling.ddim_eta,
            "figure": str(args.figure),
            "seconds_generating": round(seconds, 1),
            "seconds_per_sample": round(seconds / args.n, 2),
            "test_seed": TEST_SEED,
            "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/generation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"generation-{torch.device(device).type}.json"
    write_text(out, json.dumps(result, indent=2) + "\n")
    figure(images, masks, reference, args.figure)
    for name in ("generated", "reference", "autoencoded", "blobs"):
        row = result[name]
        print(
            f"{name:9s} "
            + "  ".join(
                f"{f}: MMD {row[f]['mmd_rbf']:.4f} KID {row[f]['kid_mean']:.4f}" for f in ("intensity", "shape")
            )
        )
    m = result["masks"]
    print(
        f"masks: {m['empty']} empty of {args.n}, median {m['median_volume_ml']:.1f} ml in "
        f"{m['median_components']:.0f} component(s), {m['mean_in_parenchyma']} inside parenchyma; "
        f"{result['environment']['seconds_per_sample']} s per sample on {device}"
    )
    print(f"decoded training masks' Dice by threshold: {result['mask_threshold_dice']}")
    for name in ("masks_training", "masks_autoencoded"):
        m = result[name]
        print(
            f"{name}: {m['empty']} empty, median {m['median_volume_ml']:.1f} ml in {m['median_components']:.0f} "
            f"component(s), {m['mean_in_parenchyma']} inside parenchyma"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
