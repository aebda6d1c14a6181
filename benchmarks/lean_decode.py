"""The whole-grid decode, plain against lean (usb_model.lean): seconds, peak memory, difference.

Each mode runs in a fresh process of its own, so that its peak resident memory (weights and
interpreter included) is its own; both decode the same random latent (seeded) on the model's
grid, or on ``--grid`` voxels a side.

    python benchmarks/lean_decode.py --model DIR [--grid N] [--threads 2]

``DIR``: a checkpoint directory, e.g. the paper-size one ``benchmarks/paper_model.py`` builds.
Writes benchmarks/results/lean-decode-<model name>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results"


def run_one(model: Path, mode: str, grid: int | None, threads: int, out: Path) -> None:
    """One decode in this process; the decoded volume to ``out`` (for the difference)."""
    from usb_model.checkpoint import load_checkpoint
    from usb_model.lean import lean_decode

    torch.set_num_threads(threads)
    networks = load_checkpoint(model).eval()
    factor = networks.cfg.autoencoder.downsample_factor
    shape = (grid,) * 3 if grid else tuple(networks.cfg.grid.shape)
    latent_shape = (1, networks.cfg.autoencoder.latent_channels, *(s // factor for s in shape))
    z = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0))
    ae = networks.autoencoder
    start = time.perf_counter()
    with torch.no_grad():
        volume = ae.decode(z) if mode == "plain" else lean_decode(ae, z)
    seconds = time.perf_counter() - start
    torch.save(volume, out)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"mode": mode, "seconds": round(seconds, 2), "peak_gb": round(peak_gb, 2), "shape": list(shape)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--grid", type=int, default=None, help="voxels a side (default: the model's grid)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=("plain", "lean"), help=argparse.SUPPRESS)
    parser.add_argument("--volume-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args.model, args.one, args.grid, args.threads, args.volume_out)
        return 0
    rows, volumes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("plain", "lean"):
            out = Path(tmp) / f"{mode}.pt"
            cmd = [sys.executable, __file__, "--model", str(args.model), "--threads", str(args.threads)]
            cmd += ["--one", mode, "--volume-out", str(out)] + (["--grid", str(args.grid)] if args.grid else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            volumes[mode] = torch.load(out)
            print(rows[-1], flush=True)
    diff = (volumes["lean"] - volumes["plain"]).abs()
    result = {
        "command": "python benchmarks/lean_decode.py --model "
        + args.model.name
        + (f" --grid {args.grid}" if args.grid else "")
        + f" --threads {args.threads}",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "max_abs_difference": float(diff.max()),
        "mean_abs_difference": float(diff.mean()),
        "output_std": float(volumes["plain"].std()),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"lean-decode-{args.model.name}{f'-{args.grid}' if args.grid else ''}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
