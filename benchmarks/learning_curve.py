"""One point of the training campaign's learning curve: a run's metric against its CPU time.

The bundled model is trained in a campaign that spans sessions (benchmarks/campaign/README.md);
whether a stage has flattened, or only ran out of session time, is read off these curves. This
evaluates the checkpoint of a ``usb-train`` directory for one stage and appends a row to
``--out`` with the stage's cumulative steps and hours from the training state:

- ``autoencoder``: held-out reconstruction (benchmarks/autoencoder.py's measure, ``--n`` brains);
- ``lesion``: the lesion net's held-out clean-latent error ``|x0_hat - x0|^2`` over a fixed grid
  of timesteps with fixed noise (benchmarks/levers.py's currency, so the campaign's curve and
  the levers' table read alike), and below t = 500 where healing and embedding work;
- ``brain``: the same for the brain net on held-out lesioned brains, conditioned as in training
  (the frozen lesion net's one-step mask estimate, eq. 11). Generation's MMD
  (benchmarks/generation.py) costs minutes per point and is measured when a stage ends.

``hours`` is the trainer's own clock (saves excluded) for that stage summed over sessions;
``cpu_hours`` multiplies it by ``--threads`` (the torch threads the run was given).

    python benchmarks/learning_curve.py RUN_DIR --stage autoencoder|lesion|brain [--run-name NAME] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoder import reconstruction_scores  # noqa: E402
from levers import EVAL_T, held_out, score  # noqa: E402

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import load_checkpoint, load_state, read_meta  # noqa: E402
from usb_model.diffusion import Diffusion  # noqa: E402
from usb_model.train.losses import brain_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_position(run_dir: Path) -> dict:
    """Steps and hours from the run's training state; a directory with a checkpoint only (e.g.
    ``usb_model.train.adopt``'s, the bundled denoisers on another run's latents) has its steps from
    the checkpoint's notes and no hours."""
    if not (run_dir / "state" / "trainer.json").is_file():
        meta = read_meta(run_dir / "checkpoint")
        config = json.loads((run_dir / "checkpoint" / "config.json").read_text())["name"]
        return {"progress": meta.get("notes", {}).get("trained_steps", {}), "seconds": {}, "config": config}
    state = load_state(run_dir / "state", "trainer")
    return {"progress": state["progress"], "seconds": state["seconds"], "config": state["config"]["name"]}


@torch.no_grad()
def brain_score(networks, items: list[dict], diffusion: Diffusion) -> dict:
    """Mean clean-latent error of the brain net over EVAL_T with fixed noise, conditioned as in
    training (usb_model.train.losses.brain_inputs with the checkpoint's lesion net)."""
    g = torch.Generator().manual_seed(2)
    tr = networks.cfg.training
    empty = networks.empty_condition(1, "cpu").float()
    errors = []
    for item in items:
        x0, y0 = item["mask"][None].float(), item["lesioned"][None].float()
        for t_value in EVAL_T:
            t = torch.tensor([t_value])
            eps_x, eps_y = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
            y_t, condition, target = brain_inputs(
                networks.lesion,
                diffusion,
                x0,
                y0,
                t,
                eps_x,
                eps_y,
                torch.zeros(1, dtype=torch.bool),
                empty,
                tr.latent_injection,
                tr.condition_clip,
            )
            output = networks.brain(torch.cat([y_t, condition], 1), t).float()
            x0_hat = diffusion.predict_x0(y_t, diffusion.to_eps(output, y_t, t), t)
            errors.append(float((x0_hat - target).pow(2).mean()))
    n = len(EVAL_T)
    low = [e for i, e in enumerate(errors) if EVAL_T[i % n] < 500]
    return {"x0_mse": sum(errors) / len(errors), "x0_mse_t_below_500": sum(low) / len(low)}


def stage_scores(networks, stage: str, n: int) -> dict:
    """The stage's metric (``value``) and its companion figures."""
    if stage == "autoencoder":
        summary = reconstruction_scores(networks, n)["summary"]["healthy"]
        return {
            "metric": "held-out PSNR inside the brain (dB)",
            "value": round(summary["psnr_brain"], 3),
            "ssim": round(summary["ssim_brain"], 4),
        }
    diffusion = Diffusion(networks.cfg.schedule)
    items = held_out(networks, n)
    scores = score(networks, items, diffusion) if stage == "lesion" else brain_score(networks, items, diffusion)
    return {
        "metric": f"{stage} net: held-out clean-latent MSE over t = 25..975",
        "value": round(scores["x0_mse"], 5),
        "x0_mse_t_below_500": round(scores["x0_mse_t_below_500"], 5),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stage", choices=["autoencoder", "lesion", "brain"], required=True)
    parser.add_argument("--run-name", default=None, help="the curve's name [default: the run's config name]")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/campaign-curve.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    position = training_position(args.run_dir)
    networks = load_checkpoint(args.run_dir / "checkpoint").eval()
    clock = time.perf_counter()
    scores = stage_scores(networks, args.stage, args.n)
    seconds = position["seconds"].get(args.stage)
    hours = seconds / 3600 if seconds is not None else None
    row = {
        "run": args.run_name or position["config"],
        "stage": args.stage,
        "steps": position["progress"].get(args.stage, 0),
        "hours": round(hours, 4) if hours is not None else None,
        "cpu_hours": round(hours * args.threads, 4) if hours is not None else None,
        "threads": args.threads,
        **scores,
        "n_eval": args.n,
        "eval_seconds": round(time.perf_counter() - clock, 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "note": args.note,
    }
    curve = (
        json.loads(args.out.read_text())
        if args.out.is_file()
        else {"command": __doc__.split("\n\n")[-1].strip(), "rows": []}
    )
    curve["rows"].append(row)
    write_text(args.out, json.dumps(curve, indent=2) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
