"""Sampling speed and memory of the USB networks and tasks, on the device found.

Prints one line per measurement and writes them all to
``benchmarks/results/sampling-<device>.json``. Weights are random: speed does not depend on
them. Targets (issue 2): one ``paper`` denoiser step at batch 1 in <= 0.5 s on a 2-core CPU;
``heal`` at the ``paper`` preset with 300 steps in <= 3 s of model time and <= 8 GB on an
H100-class GPU.

On the CPU a full ``paper`` task takes minutes, so tasks run with ``--cpu-steps`` denoiser
steps (default 10) and the JSON says how many steps were timed; nothing is extrapolated.

    python benchmarks/sampling.py [--presets paper tiny] [--cpu-steps 10] [--repeats 5]
    python benchmarks/sampling.py --presets paper --res-block scale_shift   # the authors' denoiser block
    python benchmarks/sampling.py --presets paper --tasks heal               # the GPU target alone

``--res-block scale_shift`` builds the denoisers with the authors' residual block (what
``usb-import-upstream`` checkpoints use); ``--tasks`` picks the tasks timed after the single
denoiser step (``none`` for the step alone).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.config import load_preset  # noqa: E402
from usb_model.device import autocast, pick_device  # noqa: E402
from usb_model.networks import USBNetworks  # noqa: E402
from usb_model.tasks import USB  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


TASKS = ("heal", "embed", "generate_from_mask", "generate_pairs")


def bench_preset(
    name: str,
    device: torch.device,
    repeats: int,
    cpu_steps: int,
    res_block: str | None = None,
    only: tuple[str, ...] = TASKS,
) -> list[dict]:
    cfg = load_preset(name)
    if res_block:
        cfg = cfg.replace(denoiser={"res_block": res_block})
    torch.manual_seed(0)
    usb = USB(USBNetworks(cfg), device=device)
    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    latent = torch.randn(1, *cfg.latent_shape, device=device)
    t = torch.tensor([500], device=device)

    @torch.no_grad()
    def step():
        with autocast(device):
            usb.networks.brain(torch.cat([latent, latent], 1), t)

    step()  # warm-up (cuDNN autotuning, allocator)
    times = timed(step, device, repeats)
    rows.append(
        {
            "preset": name,
            "res_block": cfg.denoiser.res_block,
            "what": "denoiser step, batch 1",
            "seconds": statistics.median(times),
            "repeats": repeats,
        }
    )

    image = torch.rand(cfg.grid.shape)
    mask = torch.zeros(cfg.grid.shape)
    c = [s // 2 for s in cfg.grid.shape]
    r = max(2, cfg.grid.shape[0] // 10)
    mask[c[0] - r : c[0] + r, c[1] - r : c[1] + r, c[2] - r : c[2] + r] = 1

    full = device.type == "cuda" or name == "tiny"
    heal_stride = 1 if full else max(1, cfg.sampling.t_start_heal // cpu_steps)
    embed_stride = 1 if full else max(1, cfg.sampling.t_start_embed // cpu_steps)
    gen_steps = cfg.sampling.steps if full else cpu_steps
    tasks = {
        "heal": (
            lambda: usb.heal(image, mask, seed=0, stride=heal_stride),
            len(usb.diffusion.edit_timesteps(cfg.sampling.t_start_heal, heal_stride)),
        ),
        "embed": (
            lambda: usb.embed(image, mask, seed=0, stride=embed_stride),
            len(usb.diffusion.edit_timesteps(cfg.sampling.t_start_embed, embed_stride)),
        ),
        "generate_from_mask": (
            lambda: usb.generate_from_mask(mask, 1, seed=0, steps=gen_steps),
            len(usb.diffusion.generation_timesteps(gen_steps)),
        ),
        "generate_pairs": (
            lambda: usb.generate_pairs(1, seed=0, steps=gen_steps),
            len(usb.diffusion.generation_timesteps(gen_steps)),
        ),
    }
    task_repeats = repeats if name == "tiny" or device.type == "cuda" else 1
    for task, (fn, n_steps) in tasks.items():
        if task not in only:
            continue
        times = timed(fn, device, task_repeats)
        rows.append(
            {
                "preset": name,
                "res_block": cfg.denoiser.res_block,
                "what": f"{task} ({n_steps} denoiser steps, end to end)",
                "task": task,
                "steps": n_steps,
                "seconds": statistics.median(times),
                "repeats": task_repeats,
            }
        )
    for row in rows:
        row["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--res-block",
        choices=["monai", "scale_shift"],
        default=None,
        help="denoiser residual block (default: the preset's)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=[*TASKS, "none"],
        default=list(TASKS),
        help="tasks to time after the denoiser step",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (default: results/sampling-<device>[-<res-block>].json)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = []
    for name in args.presets:
        for row in bench_preset(name, device, args.repeats, args.cpu_steps, args.res_block, tuple(args.tasks)):
            print(
                f"{row['preset']:>6}  {row['what']:<52} {row['seconds']:9.3f} s   peak {row['peak_memory_mb']:9.1f} MB"
            )
            rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"sampling-{device.type}{'-' + args.res_block if args.res_block else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
