"""Training speed and memory of USB (usb_model.train.Trainer), per stage, on the device found.

Prints one line per stage and writes ``benchmarks/results/training-<device>.json``: training
iterations per second (optimizer steps of one process, the first step excluded as warm-up),
seconds of the first step, and the peak memory of the stage (CUDA: ``max_memory_allocated``;
CPU: the peak resident set of the process that ran the stage).

Each stage runs in its own child process (spawned), so that its peak memory is its own and an
out-of-memory failure is reported for that stage instead of ending the benchmark. On the CPU
``--max-memory-gb`` caps the child's address space (RLIMIT_AS), so that an allocation too large
fails inside the child rather than waking the kernel's OOM killer on a shared machine.

The batches are real synthetic training triplets (usb_model.synth.TripletDataset), made once
before timing and held in memory: the numbers are the model's, not the synthesis's (whose
seconds per triplet are measured and reported separately: DataLoader workers must keep up).
Checkpoint saves at the end of a stage are not timed. Weights start random: speed does not
depend on them.

    python benchmarks/training.py [--preset paper] [--steps N] [--batch-size 1] [--device auto]
                                  [--stages autoencoder lesion brain] [--max-memory-gb 14]

Defaults: 20 steps per stage on a GPU; 2 on the CPU (a ``paper`` step at 160^3 takes minutes
on a few cores; with 2 steps the rate is that of the second step alone).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
STAGES = ("autoencoder", "lesion", "brain")


def _load_items(path: str):
    import numpy as np
    import torch

    data = np.load(path)
    n = data["healthy"].shape[0]
    return [
        {
            k: torch.from_numpy(np.ascontiguousarray(data[k][i], dtype=np.float32))[None]
            for k in ("healthy", "lesioned", "mask")
        }
        for i in range(n)
    ]


def _stage_worker(stage: str, args: dict, items_path: str, out_dir: str, queue) -> None:
    """One stage in a fresh process: build a Trainer, run ``steps`` steps, report the log."""
    result = {"stage": stage, "status": "ok"}
    try:
        if args["max_memory_gb"] and args["device_type"] == "cpu":
            limit = int(args["max_memory_gb"] * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        if args["threads"]:
            torch.set_num_threads(args["threads"])
        from usb_model.config import load_config
        from usb_model.train import Trainer, read_log

        cfg = load_config(args["preset"]).replace(training={"batch_size": args["batch_size"]})
        device = torch.device(args["device"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        items = _load_items(items_path)
        trainer = Trainer(
            cfg,
            items,
            Path(out_dir) / stage,
            device=device,
            seed=0,
            log_every=1,
            save_every=10**9,
            latent_scale_samples=1,
            template=None,
        )
        started = time.perf_counter()
        try:
            trainer.run({stage: args["steps"]})
        finally:
            trainer.close()
        result["wall_seconds"] = time.perf_counter() - started
        rows = [r for r in read_log(Path(out_dir) / stage / "log.tsv") if r["stage"] == stage]
        cumulative = [r["seconds"] for r in rows]
        result["steps"] = len(rows)
        result["first_step_seconds"] = cumulative[0] if cumulative else None
        if len(cumulative) >= 2:
            timed = cumulative[-1] - cumulative[0]
            result["timed_steps"] = len(cumulative) - 1
            result["seconds_per_step"] = timed / (len(cumulative) - 1)
            result["iterations_per_second"] = (len(cumulative) - 1) / timed if timed > 0 else None
        result["last_loss"] = rows[-1].get("loss") if rows else None
        if device.type == "cuda":
            result["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        else:
            result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (MemoryError, RuntimeError) as exc:
        text = str(exc)
        oom = isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate" in text.lower()
        result.update(
            status="out of memory" if oom else "error", message=text.splitlines()[0][:300] if text else repr(exc)
        )
        if args["device_type"] == "cpu":  # how far it got: the peak resident set before the failure
            result["peak_memory_mb_before_failure"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            )
        if not oom:
            result["traceback"] = traceback.format_exc()[-2000:]
    except Exception as exc:  # noqa: BLE001 - report, do not stop the other stages
        result.update(status="error", message=repr(exc)[:300], traceback=traceback.format_exc()[-2000:])
    queue.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="preset name or config JSON (default: paper)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default: 20 on a GPU, 2 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--max-memory-gb", type=float, default=None, help="CPU only: address-space cap of each stage's process"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON to write (default: benchmarks/results/training-<device>.json)"
    )
    args = parser.parse_args()

    import numpy as np
    import torch

    from usb_model.config import load_config
    from usb_model.device import pick_device
    from usb_model.synth import TripletDataset
    from usb_model.template import load_template

    device = pick_device(args.device)
    steps = args.steps or (20 if device.type == "cuda" else 2)
    cfg = load_config(args.preset)
    n_items = max(2, args.batch_size)
    dataset = TripletDataset(
        cfg.grid, n_items, seed=0, healthy_fraction=cfg.training.healthy_fraction, contrast=cfg.grid.contrast
    )
    load_template(cfg.grid)  # once per process, cached: not part of a triplet's cost
    started = time.perf_counter()
    items = [dataset[i] for i in range(n_items)]
    synth_seconds = (time.perf_counter() - started) / n_items
    workdir = Path(tempfile.mkdtemp(prefix="usb-train-bench-"))
    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": mp.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    setup = {
        "preset": cfg.name,
        "grid": list(cfg.grid.shape),
        "voxel_size": list(cfg.grid.voxel_size),
        "batch_size": args.batch_size,
        "steps_per_stage": steps,
        "mixed_precision": bool(cfg.training.mixed_precision and device.type == "cuda"),
        "max_memory_gb": args.max_memory_gb,
        "synthesis_seconds_per_triplet": round(synth_seconds, 3),
    }
    print(
        f"{cfg.name} {'x'.join(map(str, cfg.grid.shape))}, batch {args.batch_size}, {steps} steps per stage on {env['device']} "
        f"({env['threads']} threads); synthesis {synth_seconds:.2f} s per triplet",
        flush=True,
    )
    results = []
    try:
        items_path = workdir / "items.npz"
        np.savez(
            items_path, **{k: np.stack([it[k][0].numpy() for it in items]) for k in ("healthy", "lesioned", "mask")}
        )
        del items
        ctx = mp.get_context("spawn")
        worker_args = {
            "preset": args.preset,
            "device": str(device),
            "device_type": device.type,
            "steps": steps,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "max_memory_gb": args.max_memory_gb,
        }
        for stage in args.stages:
            queue = ctx.Queue()
            proc = ctx.Process(target=_stage_worker, args=(stage, worker_args, str(items_path), str(workdir), queue))
            proc.start()
            result = None
            while result is None and (proc.is_alive() or not queue.empty()):
                try:
                    result = queue.get(timeout=5)
                except Empty:  # keep waiting while the child lives
                    continue
            proc.join()
            if result is None:
                result = {
                    "stage": stage,
                    "status": "died",
                    "message": f"the stage's process ended with exit code {proc.exitcode} (killed: out of memory?)",
                }
            results.append(result)
            if result["status"] == "ok":
                rate = result.get("iterations_per_second")
                print(
                    f"{stage:>12}: {result['steps']} steps, first {result['first_step_seconds']:.2f} s, "
                    + (
                        f"{rate:.4g} it/s ({result['seconds_per_step']:.2f} s/step)"
                        if rate
                        else "rate needs >= 2 steps"
                    )
                    + f", peak {result['peak_memory_mb']:.0f} MB",
                    flush=True,
                )
            else:
                print(f"{stage:>12}: {result['status']}: {result.get('message')}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or RESULTS / f"training-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"environment": env, "setup": setup, "results": results}, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
