"""CPU kernels for the USB networks: float32 against channels-last 3D, bf16 autocast and
torch.compile, at 1 and 2 threads, on the autoencoder (a 64^3 box, the size of an edit box) and
one denoiser step (the whole latent), for a model directory. Records the CPU's features.

    python benchmarks/kernels.py --model DIR [--box 64] [--repeats 2] [--compile] [--threads 1,2]

Writes benchmarks/results/kernels-<model name>.json. Nothing is kept by default: the app runs
float32, contiguous, eager, unless these numbers show a win that does not move the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results"


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (oneDNN primitive creation, compile)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    from participant import cpu_flags

    from usb_model.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts [1,2]")
    args = parser.parse_args()
    networks = load_checkpoint(args.model).eval()
    cfg = networks.cfg
    ae, den = networks.autoencoder, networks.brain
    n = min(args.box, *cfg.grid.shape)
    x = torch.rand(1, 1, n, n, n)
    with torch.no_grad():
        z = networks.encode(x)
    lat = torch.randn(1, *cfg.latent_shape)
    t = torch.tensor([50])
    rows = []
    variants = ["fp32", "channels_last", "bf16"] + (["compile"] if args.compile else [])
    for threads in [int(n) for n in args.threads.split(",")]:
        torch.set_num_threads(threads)
        ref = {}
        for variant in variants:
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext()
            fmt = torch.channels_last_3d if variant == "channels_last" else torch.contiguous_format
            dec = ae.decode
            enc = ae.encode
            step = den
            if variant == "compile":
                dec, enc, step = torch.compile(ae.decode), torch.compile(ae.encode), torch.compile(den)
            for name, fn in (
                ("encode", lambda enc=enc, fmt=fmt: enc(x.contiguous(memory_format=fmt))[0]),
                ("decode", lambda dec=dec, fmt=fmt: dec(z.contiguous(memory_format=fmt) / networks.latent_scale)),
                (
                    "denoiser step",
                    lambda step=step, fmt=fmt: step(torch.cat([lat, lat], 1).contiguous(memory_format=fmt), t),
                ),
            ):
                if variant == "channels_last":
                    ae.to(memory_format=torch.channels_last_3d)
                    den.to(memory_format=torch.channels_last_3d)
                try:
                    with torch.no_grad(), cast:
                        start = time.perf_counter()
                        seconds, out = timed(fn, args.repeats)
                        first = time.perf_counter() - start - seconds * args.repeats
                    out = out.float()
                    diff = float((out - ref[name]).abs().max()) if name in ref else 0.0
                    if variant == "fp32":
                        ref[name] = out
                    rows.append(
                        {
                            "threads": threads,
                            "variant": variant,
                            "what": name,
                            "seconds": seconds,
                            "first_call_seconds": first,
                            "max_abs_diff_vs_fp32": diff,
                        }
                    )
                    print(
                        f"{threads}  {variant:<14} {name:<14} {seconds:7.3f} s (first {first:6.1f} s)  diff {diff:.2e}",
                        flush=True,
                    )
                except Exception as exc:  # a variant the build does not support is recorded, not fatal
                    rows.append({"threads": threads, "variant": variant, "what": name, "error": str(exc)[:200]})
                    print(f"{threads}  {variant:<14} {name:<14} failed: {str(exc)[:100]}", flush=True)
                finally:
                    ae.to(memory_format=torch.contiguous_format)
                    den.to(memory_format=torch.contiguous_format)
    result = {
        "model": str(args.model),
        "box": n,
        "latent": list(cfg.latent_shape),
        "torch": torch.__version__,
        "cpu_flags": cpu_flags(),
        "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"kernels-{cfg.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
