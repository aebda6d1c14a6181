"""Healing quality against classical lesion filling, and embedding accuracy, on held-out data.

The test set is synthesised on the model grid (usb_model.synth) with seeds never used in
training (training uses ``default_rng([seed, i])`` with seed 0; this uses seed 7_000_003):
healthy brains from the template, lesions from WMH-like spots to stroke-like territories,
dark (T1w-like, as in training) and bright (out of training distribution). Each method gets
the same lesioned image and the true mask; all are composited the same way (outside the
blend band the input is kept), so differences are inside the lesion.

Methods:
- ``none``: the lesioned input itself;
- ``wm_fill``: the white-matter mean plus Gaussian noise of the white matter's std inside the
  lesion, as FSL's ``lesion_filling`` does (white matter = the template's WM map > 0.5 here);
- ``graft``: the template's intensities, matched to the participant by a least-squares line
  fitted on the brain outside the lesion, pasted into the lesion (Virtual Brain Grafting with a
  template donor; the test brains are deformed copies of that template, which flatters this
  baseline);
- ``usb_noacg`` and ``usb``: the paper's mask-free USB heal without and with Anatomy
  Consistency Guidance (``mode="acg"``);
- ``usb_mask``: mask-aware healing (the default with a mask: template graft, then the lesion
  regenerated with ACG holding the rest).

Metrics (usb_model.metrics): masked L1, PSNR (data range 1) and SSIM over the brain and inside
the lesion, against the healthy ground truth. Embedding: lesions drawn into the healthy brains
with the same masks; Dice of the thresholded change map (|edited - input| > 0.1) with the mask,
and the mean absolute change outside the mask.

    python benchmarks/quality.py --model DIR [--n 24] [--threads 2]
Writes benchmarks/results/quality.json and docs/figures/quality.png (or ``--out``, ``--figure``).
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

from usb_model import fill  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256  # noqa: E402
from usb_model.composite import blend_weight, composite  # noqa: E402
from usb_model.metrics import dice, masked_l1, masked_psnr, masked_ssim  # noqa: E402
from usb_model.synth import encode_lesion, random_lesion, synth_healthy  # noqa: E402
from usb_model.tasks import USB  # noqa: E402
from usb_model.template import load_template  # noqa: E402

RESULTS = Path(__file__).parent / "results"
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
TEST_SEED = 7_000_003
SIZES = ("wmh", "small", "medium", "large", "stroke")
METHODS = ("none", "wm_fill", "graft", "usb_noacg", "usb", "usb_mask")


def make_case(template, i: int):
    rng = np.random.default_rng([TEST_SEED, i])
    brain = synth_healthy(template, rng, "T1w", voxel_size=template.voxel_size)
    size = SIZES[i % len(SIZES)]
    if size == "wmh":
        mask = random_lesion(brain.brain_mask, rng, size="wmh", wm=brain.wm, voxel_size=template.voxel_size)
    else:
        mask = random_lesion(brain.parenchyma, rng, size=size, voxel_size=template.voxel_size)
    bright = i % 2 == 1
    lesioned = encode_lesion(brain.image, mask, rng, "FLAIR" if bright else "T1w")
    return {
        "healthy": brain.image,
        "lesioned": lesioned,
        "mask": mask,
        "brain": brain.brain_mask,
        "wm": brain.wm,
        "size": size,
        "bright": bright,
    }


def wm_fill(case, rng) -> np.ndarray:
    return np.clip(fill.wm_fill(case["lesioned"], case["mask"], brain=case["brain"], wm=case["wm"], rng=rng), 0, 1)


def graft(case, template) -> np.ndarray:
    return np.clip(fill.template_graft(case["lesioned"], case["mask"], template.t1w, brain=case["brain"]), 0, 1)


def scores(pred, case) -> dict[str, float]:
    gt, brain, lesion = case["healthy"], case["brain"], case["mask"]
    return {
        "l1_brain": masked_l1(pred, gt, brain),
        "psnr_brain": masked_psnr(pred, gt, brain, data_range=1.0),
        "ssim_brain": masked_ssim(pred, gt, brain, data_range=1.0),
        "l1_lesion": masked_l1(pred, gt, lesion),
        "psnr_lesion": masked_psnr(pred, gt, lesion, data_range=1.0),
        "ssim_lesion": masked_ssim(pred, gt, lesion, data_range=1.0),
    }


def embed_scores(usb, case: dict, i: int, stride) -> dict:
    """The case's mask embedded into its healthy brain: Dice of the change map with the mask, and
    the mean change outside it."""
    emb = usb.embed(case["healthy"], case["mask"], seed=i, stride=stride).image.numpy()
    change = np.abs(emb - case["healthy"]) > 0.1
    outside = case["brain"] & ~case["mask"]
    return {
        "case": i,
        "size": case["size"],
        "dice": dice(change & case["brain"], case["mask"]),
        "mean_abs_change_outside": float(np.abs(emb - case["healthy"])[outside].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stride", type=int, default=None, help="edit stride (default: the model's)")
    parser.add_argument(
        "--embed-only", action="store_true", help="measure embedding alone (the healing passes cost most of the time)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--figure", type=Path, default=FIGURES / "quality.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    usb = USB.from_checkpoint(args.model, device=None if args.device == "auto" else args.device)
    grid = usb.cfg.grid
    template = load_template(grid)
    rng = np.random.default_rng(TEST_SEED)
    rows, embed_rows, example = [], [], None
    started = time.time()
    for i in range(args.n):
        case = make_case(template, i)
        if args.embed_only:
            embed_rows.append(embed_scores(usb, case, i, args.stride))
            print(f"case {i:3d} {case['size']:>7}: embed dice {embed_rows[-1]['dice']:.2f}", flush=True)
            continue
        weight = blend_weight(case["mask"], grid.voxel_size, *usb.cfg.sampling.band_mm)
        preds = {
            "none": case["lesioned"],
            "wm_fill": wm_fill(case, rng),
            "graft": graft(case, template),
            "usb_noacg": usb.heal(
                case["lesioned"], case["mask"], mode="acg", seed=i, acg=False, stride=args.stride, composite=False
            ).image.numpy(),
            "usb": usb.heal(
                case["lesioned"], case["mask"], mode="acg", seed=i, stride=args.stride, composite=False
            ).image.numpy(),
            "usb_mask": usb.heal(
                case["lesioned"], case["mask"], seed=i, stride=args.stride, composite=False
            ).image.numpy(),
        }
        for method, pred in preds.items():
            pred = composite(case["lesioned"], pred, weight)
            rows.append(
                {
                    "case": i,
                    "size": case["size"],
                    "bright": case["bright"],
                    "method": method,
                    "lesion_ml": float(case["mask"].sum() * np.prod(grid.voxel_size) / 1000),
                    **scores(pred, case),
                }
            )
            preds[method] = pred
        if example is None and case["size"] in ("large", "stroke"):
            example = (case, preds)
        embed_rows.append(embed_scores(usb, case, i, args.stride))
        print(
            f"case {i:3d} {case['size']:>7} {'bright' if case['bright'] else 'dark':>6}: "
            + "  ".join(f"{r['method']} {r['psnr_lesion']:.1f}" for r in rows[-len(METHODS) :])
            + f"   embed dice {embed_rows[-1]['dice']:.2f}",
            flush=True,
        )

    def mean(method, key, subset=None):
        values = [r[key] for r in rows if r["method"] == method and (subset is None or subset(r))]
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    methods = () if args.embed_only else METHODS
    summary = {
        m: {k: mean(m, k) for k in ("l1_brain", "psnr_brain", "ssim_brain", "l1_lesion", "psnr_lesion", "ssim_lesion")}
        for m in methods
    }
    by_kind = {
        kind: {m: mean(m, "psnr_lesion", lambda r, b=bright: r["bright"] == b) for m in methods}
        for kind, bright in (("dark", False), ("bright", True))
    }
    embed = {
        "dice_mean": float(np.mean([r["dice"] for r in embed_rows])),
        "mean_abs_change_outside": float(np.mean([r["mean_abs_change_outside"] for r in embed_rows])),
    }
    result = {
        "model": str(args.model),
        "model_sha256": checkpoint_sha256(checkpoint_directory(args.model)),
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:]),
        "grid": list(grid.shape),
        "voxel_size": list(grid.voxel_size),
        "n_cases": args.n,
        "test_seed": TEST_SEED,
        "seconds": time.time() - started,
        "summary": summary,
        "psnr_lesion_by_kind": by_kind,
        "embed": embed,
        "cases": rows,
        "embed_cases": embed_rows,
    }
    print("\nmethod      L1 brain  PSNR brain  SSIM brain   L1 lesion  PSNR lesion  SSIM lesion")
    for m in methods:
        s = summary[m]
        print(
            f"{m:<10} {s['l1_brain']:9.4f} {s['psnr_brain']:11.2f} {s['ssim_brain']:11.3f} "
            f"{s['l1_lesion']:11.4f} {s['psnr_lesion']:12.2f} {s['ssim_lesion']:12.3f}"
        )
    print(
        f"embedding: Dice {embed['dice_mean']:.3f}, mean |change| outside the mask {embed['mean_abs_change_outside']:.4f}"
    )
    out = args.out
    write_text(out, json.dumps(result, indent=2) + "\n")
    if example is not None:
        figure(example, args.figure)
    print(f"wrote {out}")


def figure(example, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case, preds = example
    z = int(np.argmax(case["mask"].sum(axis=(0, 1))))
    panels = [("ground truth", case["healthy"]), *[(m, preds[m]) for m in METHODS]]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(np.rot90(img[:, :, z]), cmap="gray", vmin=0, vmax=1)
        ax.contour(np.rot90(case["mask"][:, :, z]), levels=[0.5], colors="r", linewidths=0.6)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
