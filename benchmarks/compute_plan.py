"""What a CPU-hour buys for each training stage: the numbers the campaign's shapes are chosen from.

A 2-core machine trains the bundled model, so every design choice (latent shape, denoiser size,
batch, cached latents) is a trade of quality per CPU-hour. This times, on the current machine
with ``--threads`` torch threads:

- synthesising one training triplet (usb_model.synth, the on-the-fly data);
- one autoencoder update on a whole volume at batch 1 and 2;
- encoding one volume (what a denoiser step pays per image when latents are not cached);
- one denoiser update (forward, backward, Adam) on latents at batch 1, 2, 4 and 8, for each
  candidate denoiser shape on each candidate latent, and one extra lesion-net forward (what the
  brain stage adds for its condition).

Each figure is the median of ``--repeats`` timed steps after one untimed warm-up step.

    python benchmarks/compute_plan.py [--threads 2] [--repeats 3] [--out benchmarks/results/compute-plan.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.config import USBConfig, load_config  # noqa: E402
from usb_model.networks import build_autoencoder, build_denoiser, count_parameters  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AE_CONFIGS = {
    "f2c4": ROOT / "benchmarks/configs/ae_f2c4_whole.json",
    "f4c8": ROOT / "benchmarks/configs/ae_f4c8.json",
}
# Denoiser candidates: (channels, attention levels, head channels, groups).
DENOISERS = {
    "c32-64-64 attn3": ([32, 64, 64], [False, False, True], 64, 16),
    "c16-32-64 attn3": ([16, 32, 64], [False, False, True], 64, 8),
    "c32-64-128 attn3": ([32, 64, 128], [False, False, True], 64, 16),
    "c32-64-64-64 attn4": ([32, 64, 64, 64], [False, False, False, True], 64, 16),
}
BATCHES = (1, 2, 4, 8)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, MONAI's first-call work
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_denoiser(cfg: USBConfig, spec) -> USBConfig:
    channels, attention, heads, groups = spec
    data = cfg.to_dict()
    data["denoiser"].update(
        channels=channels, attention_levels=attention, num_head_channels=heads, norm_num_groups=groups
    )
    return USBConfig.from_dict(data)


def autoencoder_rows(cfg: USBConfig, name: str, repeats: int) -> list[dict]:
    ae = build_autoencoder(cfg)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-4)
    rows = []
    for batch in (1, 2):
        x = torch.rand(batch, 1, *cfg.grid.shape)

        def step(x=x):
            recon, _, _ = ae(x)
            loss = torch.nn.functional.mse_loss(recon, x)
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows.append({"stage": "autoencoder", "latent": name, "batch": batch, "seconds_per_step": timed(step, repeats)})
    x = torch.rand(1, 1, *cfg.grid.shape)
    with torch.no_grad():
        encode = timed(lambda: ae.encode(x), repeats)
    rows.append({"stage": "encode", "latent": name, "batch": 1, "seconds_per_step": encode})
    for row in rows:
        row["parameters"] = count_parameters(ae)
    return rows


def denoiser_rows(cfg: USBConfig, latent_name: str, shape_name: str, repeats: int) -> list[dict]:
    net = build_denoiser(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    c = cfg.autoencoder.latent_channels
    rows = []
    for batch in BATCHES:
        z = torch.randn(batch, 2 * c, *cfg.latent_shape[1:])
        target = torch.randn(batch, c, *cfg.latent_shape[1:])
        t = torch.randint(0, 1024, (batch,))

        def step(z=z, t=t, target=target):
            loss = torch.nn.functional.mse_loss(net(z, timesteps=t), target)
            opt.zero_grad()
            loss.backward()
            opt.step()

        seconds = timed(step, repeats)
        with torch.no_grad():
            forward = timed(lambda z=z, t=t: net(z, timesteps=t), repeats)
        rows.append(
            {
                "stage": "denoiser",
                "latent": latent_name,
                "denoiser": shape_name,
                "batch": batch,
                "seconds_per_step": seconds,
                "seconds_per_sample": seconds / batch,
                "lesion_forward_seconds": forward,
                "parameters": count_parameters(net),
                "samples_per_cpu_hour": 3600 * batch / seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latents", nargs="+", default=list(AE_CONFIGS), choices=list(AE_CONFIGS))
    parser.add_argument("--denoisers", nargs="+", default=list(DENOISERS), choices=list(DENOISERS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/compute-plan.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows: list[dict] = []
    base = load_config(str(AE_CONFIGS["f2c4"]))
    data = TripletDataset(base.grid, 8, 7_000_003, healthy_fraction=0.2, contrast="T1w")
    synth = timed(lambda: data[int(time.perf_counter_ns()) % 8], args.repeats)
    rows.append({"stage": "synthesis", "batch": 1, "seconds_per_step": synth})
    print(json.dumps(rows[-1]), flush=True)
    for latent in args.latents:
        cfg = load_config(str(AE_CONFIGS[latent]))
        for row in autoencoder_rows(cfg, latent, args.repeats):
            rows.append(row)
            print(json.dumps(row), flush=True)
        for shape in args.denoisers:
            rows.extend(denoiser_rows(with_denoiser(cfg, DENOISERS[shape]), latent, shape, args.repeats))
    result = {
        "command": "python benchmarks/compute_plan.py " + " ".join(sys.argv[1:]),
        "environment": {
            "torch": torch.__version__,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"),
            "load_average": os.getloadavg(),
        },
        "latent_shapes": {name: list(load_config(str(p)).latent_shape) for name, p in AE_CONFIGS.items()},
        "results": rows,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
