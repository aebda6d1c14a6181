"""One point of the training campaign's learning curve: a run's metric against its CPU time.

The bundled model is trained in a campaign that spans sessions (benchmarks/campaign/README.md);
whether a stage has flattened, or only ran out of session time, is read off these curves. This
evaluates the checkpoint of a ``usb-train`` directory for one stage and appends a row to
``--out`` with the stage's cumulative steps and hours from the training state:

- ``autoencoder``: held-out reconstruction (benchmarks/autoencoder.py's measure, ``--n`` brains).

``hours`` is the trainer's own clock (saves excluded) for that stage summed over sessions;
``cpu_hours`` multiplies it by ``--threads`` (the torch threads the run was given).

    python benchmarks/learning_curve.py RUN_DIR --stage autoencoder [--run-name NAME] [--threads 2]
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

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import load_checkpoint, load_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_position(run_dir: Path) -> dict:
    state = load_state(run_dir / "state", "trainer")
    return {"progress": state["progress"], "seconds": state["seconds"], "config": state["config"]["name"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stage", choices=["autoencoder"], required=True)
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
    summary = reconstruction_scores(networks, args.n)["summary"]["healthy"]
    hours = position["seconds"][args.stage] / 3600
    row = {
        "run": args.run_name or position["config"],
        "stage": args.stage,
        "steps": position["progress"][args.stage],
        "hours": round(hours, 4),
        "cpu_hours": round(hours * args.threads, 4),
        "threads": args.threads,
        "metric": "held-out PSNR inside the brain (dB)",
        "value": round(summary["psnr_brain"], 3),
        "ssim": round(summary["ssim_brain"], 4),
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
