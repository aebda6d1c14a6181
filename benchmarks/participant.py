"""Wall time per stage and peak memory of the participant level, for one 1 mm T1w.

Makes a one-participant synthetic dataset (usb-synth-dataset, 1 mm, RAS), runs the participant
workflow in this process with nipype's Linear plugin, and reads each node's own runtime.
Prints a table and writes ``benchmarks/results/participant-<device>.json``.

Targets (issue 4): preprocessing (prepare .. to_model_grid) of a 1 mm T1w in <= 60 s on 2 CPU
cores; a whole participant at the demo model's size in <= 3 minutes on 2 CPU cores.

    python benchmarks/participant.py [--model DIR] [--threads 2] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
PREPROCESSING = ("prepare", "bias_correct", "skull_strip", "register", "to_model_grid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="edit steps (default: the model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", type=Path, default=None, help="keep the dataset and outputs here")
    args = parser.parse_args()

    import os

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)

    from bids_usb.model import ModelBundle
    from bids_usb.workflows.participant import ImageJob, RunSettings, init_participant_wf
    from usb_model.synth.bids_writer import write_dataset

    root = args.keep or Path(tempfile.mkdtemp(prefix="bids_usb_bench_"))
    bids = root / "bids"
    if not bids.exists():
        write_dataset(bids, participants=1, seed=11, n_healthy=0, voxel_size=(1.0, 1.0, 1.0), variety=False)
    anat = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    mask = bids / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz"
    bundle = ModelBundle.open(args.model)
    params = {}
    if args.steps:
        params["stride"] = max(1, bundle.config.sampling.t_start_heal // args.steps)
    settings = RunSettings(task="heal", params=params, device=args.device, omp_nthreads=args.threads)
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    job = ImageJob(anat=anat, entities={"subject": "01"}, lesion_mask=mask)
    wf = init_participant_wf([job], bundle, settings, bids, root / "out", work)
    start = time.perf_counter()
    graph = wf.run(plugin="Linear")
    total = time.perf_counter() - start
    stages = {}
    for node in graph.nodes():
        stages[node.name] = float(node.result.runtime.duration)
    preprocessing = sum(stages.get(s, 0.0) for s in PREPROCESSING)
    import nibabel as nib

    img = nib.load(str(anat))
    result = {
        "environment": {
            "device": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() and args.device != "cpu"
            else f"cpu ({platform.machine()})",
            "threads": args.threads,
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "model": str(bundle.path),
            "model_grid": list(bundle.config.grid.shape),
            "input_shape": list(img.shape),
            "input_voxel_mm": [float(z) for z in img.header.get_zooms()[:3]],
        },
        "stages_seconds": stages,
        "preprocessing_seconds": preprocessing,
        "workflow_seconds": total,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "targets": {"preprocessing_seconds": 60, "workflow_seconds": 180},
    }
    for name, seconds in stages.items():
        print(f"{name:<16} {seconds:8.2f} s")
    print(f"{'preprocessing':<16} {preprocessing:8.2f} s   (target <= 60 s)")
    print(f"{'whole workflow':<16} {total:8.2f} s   (target <= 180 s)")
    print(f"{'peak memory':<16} {result['peak_memory_mb']:8.1f} MB")
    RESULTS.mkdir(exist_ok=True)
    device = "cuda" if "cpu" not in result["environment"]["device"] else "cpu"
    out = RESULTS / f"participant-{device}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
