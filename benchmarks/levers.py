"""The training levers at equal CPU time: v-prediction and min-SNR-gamma against the plain loss.

The levers change the denoisers' objective, not the cost of a step (same network, same batch),
so equal steps are equal CPU-hours. Each variant trains USB_lesion from the same start, on the
same cached latents (usb_model.train.latents) of the same autoencoder, for the same steps, with
``usb-train`` itself; its EMA weights are then scored on held-out triplets (seed 7000003) in
one currency all variants share: the noise error ``|eps_hat - eps|^2`` and the clean-latent
error ``|x0_hat - x0|^2``, both over a fixed grid of timesteps and fixed noise (v outputs are
turned into eps first), and the same on training triplets (the gap says whether the cache is
being memorised).

    python benchmarks/levers.py [--steps 400] [--cache 256] [--parallel 2] [--work /tmp/levers]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import load_checkpoint  # noqa: E402
from usb_model.config import USBConfig  # noqa: E402
from usb_model.diffusion import Diffusion  # noqa: E402
from usb_model.synth import TripletDataset  # noqa: E402
from usb_model.train import latents  # noqa: E402
from usb_model.train.cli import build_dataset, networks_with_autoencoder  # noqa: E402
from usb_model.train.trainer import LATENT_DIR, Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "benchmarks/campaign/denoiser_f2c4.json"
AUTOENCODER = ROOT / "benchmarks/checkpoints/ae_f2c4_whole.safetensors"
VARIANTS = {
    "eps": {"prediction_type": "epsilon", "min_snr_gamma": 0.0},
    "eps_minsnr5": {"prediction_type": "epsilon", "min_snr_gamma": 5.0},
    "v": {"prediction_type": "v_prediction", "min_snr_gamma": 0.0},
    "v_minsnr5": {"prediction_type": "v_prediction", "min_snr_gamma": 5.0},
}
EVAL_T = list(range(25, 1024, 50))
TEST_SEED = 7_000_003


def variant_config(base: USBConfig, variant: dict, cache: int) -> USBConfig:
    data = base.to_dict()
    data["name"] = f"levers-{variant['prediction_type']}-{variant['min_snr_gamma']}"
    data["schedule"]["prediction_type"] = variant["prediction_type"]
    data["training"].update(min_snr_gamma=variant["min_snr_gamma"], latent_cache=cache)
    return USBConfig.from_dict(data)


def prepare_cache(cfg: USBConfig, work: Path, autoencoder: Path) -> Path:
    """The cached latents every variant trains on (built once, copied into each run)."""
    directory = work / "shared" / LATENT_DIR
    trainer = Trainer(cfg, build_dataset(cfg, 0), work / "shared", networks=networks_with_autoencoder(cfg, autoencoder))
    trainer.compute_latent_scale()
    clock = time.perf_counter()
    _, built = latents.load_or_build(
        directory, trainer.networks, trainer.dataset, cfg.training.latent_cache, cfg.training.batch_size, trainer.device
    )
    print(f"cache {'built' if built else 'found'} in {time.perf_counter() - clock:.0f} s", flush=True)
    return directory


@torch.no_grad()
def score(networks, items: list[dict], diffusion: Diffusion) -> dict:
    """Mean noise and clean-latent errors of the lesion net over EVAL_T with fixed noise."""
    g = torch.Generator().manual_seed(1)
    eps_err, x0_err = [], []
    for item in items:
        x0, y0 = item["mask"][None].float(), item["lesioned"][None].float()
        for t_value in EVAL_T:
            t = torch.tensor([t_value])
            eps_x, eps_y = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
            x_t, y_t = diffusion.add_noise(x0, eps_x, t), diffusion.add_noise(y0, eps_y, t)
            eps_hat = diffusion.to_eps(networks.lesion(torch.cat([x_t, y_t], 1), t).float(), x_t, t)
            eps_err.append(float((eps_hat - eps_x).pow(2).mean()))
            x0_err.append(float((diffusion.predict_x0(x_t, eps_hat, t) - x0).pow(2).mean()))
    n = len(EVAL_T)

    def by_t(errors):
        return dict(zip(EVAL_T, (round(sum(errors[i::n]) / (len(errors) // n), 5) for i in range(n))))

    low = [e for i, e in enumerate(x0_err) if EVAL_T[i % n] < 500]
    return {
        "eps_mse": sum(eps_err) / len(eps_err),
        "x0_mse": sum(x0_err) / len(x0_err),
        "x0_mse_t_below_500": sum(low) / len(low),
        "eps_mse_by_t": by_t(eps_err),
        "x0_mse_by_t": by_t(x0_err),
    }


def held_out(networks, n: int) -> list[dict]:
    data = TripletDataset(networks.cfg.grid, n, TEST_SEED, healthy_fraction=0.0, contrast=networks.cfg.grid.contrast)
    with torch.no_grad():
        return [{k: networks.encode(data[i][k][None])[0] for k in ("mask", "lesioned")} for i in range(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once, one thread each")
    parser.add_argument("--n-eval", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/levers"))
    parser.add_argument("--autoencoder", type=Path, default=AUTOENCODER)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/levers.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // args.parallel))
    base = USBConfig.from_json(BASE)
    cache = prepare_cache(variant_config(base, VARIANTS["eps"], args.cache), args.work, args.autoencoder)

    runs, pending = {}, list(args.variants)
    while pending or runs:
        while pending and len(runs) < args.parallel:
            name = pending.pop(0)
            run = args.work / name
            cfg = variant_config(base, VARIANTS[name], args.cache)
            run.mkdir(parents=True, exist_ok=True)
            cfg.to_json(run / "config.json")
            if not (run / LATENT_DIR).exists():
                shutil.copytree(cache, run / LATENT_DIR)
            command = ["usb-train", str(run), "--preset", str(run / "config.json"), "--threads", "1"]
            command += ["--init-autoencoder", str(args.autoencoder), "--steps", f"lesion={args.steps}"]
            command += ["--save-every", "100", "--log-every", "50"]
            log = open(run / "train.log", "a")  # noqa: SIM115 - closed when the process ends
            runs[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, time.perf_counter())
        time.sleep(5)
        for name, (proc, log, _) in list(runs.items()):
            if proc.poll() is not None:
                log.close()
                if proc.returncode:
                    raise SystemExit(
                        f"{name}: usb-train exited {proc.returncode}; see {args.work / name / 'train.log'}"
                    )
                del runs[name]
                print(f"{name}: trained", flush=True)

    torch.set_num_threads(os.cpu_count() or 2)
    rows = []
    test_items = None
    for name in args.variants:
        networks = load_checkpoint(args.work / name / "checkpoint").eval()
        diffusion = Diffusion(networks.cfg.schedule)
        test_items = test_items or held_out(networks, args.n_eval)
        train_items = [
            latents.LatentDataset(latents.load_file(str(cache / "latents.safetensors")))[i] for i in range(args.n_eval)
        ]
        rows.append(
            {
                "variant": name,
                **VARIANTS[name],
                "steps": args.steps,
                "held_out": score(networks, test_items, diffusion),
                "training": score(networks, train_items, diffusion),
            }
        )
        print(json.dumps({k: rows[-1][k] for k in ("variant", "held_out")})[:300], flush=True)
    result = {
        "command": "python benchmarks/levers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setup": {
            "base_config": str(BASE.relative_to(ROOT)),
            "autoencoder": str(args.autoencoder),
            "stage": "lesion",
            "cache_triplets": args.cache,
            "threads_per_run": max(1, (os.cpu_count() or 2) // args.parallel),
            "eval_timesteps": EVAL_T,
            "n_eval": args.n_eval,
            "date": time.strftime("%Y-%m-%d"),
        },
        "results": rows,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
