"""``--lesion-from generate``: are the lesions the model proposes for a brain plausible?

Issue 22 asks of a lesion generated for a given brain (``USB.generate_lesion``: paired sampling,
the candidate whose generated brain is closest to the input, cut to the brain) that it lies in the
brain, >= 80 % in parenchyma, with a volume in the range of the training lesions. The input here is
the model's own template brain on its grid, whose parenchyma is known, with ``--n`` seeds; the
training lesions' range is the 5th-95th percentile of ``--n-training`` masks as training draws
them (every item lesioned).

    python benchmarks/lesion_from_generate.py --model resources/models/demo --n 8 \\
        --out benchmarks/results/lesion-from-generate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generation import held_out_masks, mask_stats  # noqa: E402

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256, read_meta  # noqa: E402
from usb_model.device import pick_device  # noqa: E402
from usb_model.tasks import USB  # noqa: E402
from usb_model.template import load_template  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources" / "models" / "demo")
    parser.add_argument("--n", type=int, default=8, help="seeds (one proposal each)")
    parser.add_argument("--n-training", type=int, default=64, help="training masks for the volume range")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lesion-from-generate.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    directory = checkpoint_directory(args.model)
    usb = USB.from_checkpoint(directory, device=pick_device(args.device))
    cfg = usb.cfg
    template = load_template(cfg.grid)
    voxel_ml = float(np.prod(cfg.grid.voxel_size)) / 1000.0
    brain = template.brain_mask.astype(np.float32)
    image = (template.t1w * template.brain_mask).astype(np.float32)

    rows, clock = [], time.perf_counter()
    for seed in range(args.n):
        proposal = usb.generate_lesion(image, brain, seed=seed)
        mask = proposal.mask.numpy() > 0.5
        stat = mask_stats([mask.astype(np.float32)], template.parenchyma, voxel_ml)[0]
        rows.append(
            {
                "seed": seed,
                **stat,
                "in_brain": float((mask & template.brain_mask).sum() / mask.sum()) if mask.any() else None,
                "qualified_candidates": proposal.info["qualified"],
                "n_candidates": proposal.info["n_candidates"],
            }
        )
        print(rows[-1], flush=True)
    seconds = time.perf_counter() - clock
    training = [s["volume_ml"] for s in mask_stats(held_out_masks(cfg, args.n_training), template.parenchyma, voxel_ml)]
    lo, hi = (float(v) for v in np.percentile(training, [5, 95]))
    found = [r for r in rows if r["volume_ml"] > 0]
    summary = {
        "proposed": len(found),
        "empty": len(rows) - len(found),
        "median_volume_ml": float(np.median([r["volume_ml"] for r in found])) if found else None,
        "mean_in_parenchyma": float(np.mean([r["in_parenchyma"] for r in found])) if found else None,
        "share_with_80pct_parenchyma": float(np.mean([r["in_parenchyma"] >= 0.8 for r in found])) if found else None,
        "share_in_training_range": float(np.mean([lo <= r["volume_ml"] <= hi for r in found])) if found else None,
        "training_volume_ml_p5_p95": [lo, hi],
        "training_median_volume_ml": float(np.median(training)),
    }
    result = {
        "summary": summary,
        "proposals": rows,
        "environment": {
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "model_sha256": checkpoint_sha256(directory),
            "trained_steps": read_meta(directory).get("notes", {}).get("trained_steps"),
            "input": "the model's template brain (its grid), one proposal per seed",
            "n": args.n,
            "seconds": round(seconds, 1),
            "threads": args.threads,
            "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/lesion_from_generate.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
