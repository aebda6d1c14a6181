"""Wall time per stage and peak memory of the participant level, for one 1 mm T1w.

Makes a one-participant synthetic dataset (usb-synth-dataset, 1 mm, RAS), runs the participant
workflow in this process with nipype's Linear plugin, and reads each node's own runtime.
Prints a table and writes ``benchmarks/results/participant-<device>.json``.

Targets (issue 4): preprocessing (prepare .. to_model_grid) of a 1 mm T1w in <= 60 s on 2 CPU
cores; a whole participant at the demo model's size in <= 3 minutes on 2 CPU cores.

The USB node's own costs (issue 26): seconds and peak resident memory per stage (load, encodes,
fill, sampling, decodes, outputs) and every autoencoder pass with the voxels it covered, as the
node recorded them (``usb_costs.json``). Then, in the same process and on the node's own inputs
(the model-grid image and lesion), the edit is run again both ways, ``--ae-passes full`` (every
pass over the whole grid, the paper's way) and ``edit`` (the default), each with its stage costs,
and the two are compared inside the edit region (max and mean absolute difference, [0, 1]).

``--paper`` builds a paper-size checkpoint (160^3 at 1 mm) from random weights in the authors'
formats and converts it with usb-import-upstream's own code (benchmarks/paper_model.py).

    python benchmarks/participant.py [--model DIR | --paper] [--threads 2] [--steps N] [--mem GB]
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


def peak_memory_mb(node_costs: dict, compare: dict | None) -> float:
    """The process's resident high-water mark over the whole run. The USB stage's cost log resets
    the kernel's mark before each of its stages (usb_model.costs), so ``ru_maxrss`` alone holds
    only what came after the last reset: the stages' own peaks are folded in."""
    peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, node_costs.get("peak_rss_mb", 0.0)]
    peaks += [run.get("peak_rss_mb", 0.0) for how, run in (compare or {}).items() if how in ("full", "edit")]
    return float(max(peaks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled demo model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="edit steps (default: the model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep", type=Path, default=None, help="keep the dataset and outputs here")
    parser.add_argument("--paper", action="store_true", help="a paper-size checkpoint from random weights")
    parser.add_argument("--mem", type=float, default=None, help="memory budget in GB (as --mem), for the edit path")
    parser.add_argument("--no-compare", action="store_true", help="skip the full/edit comparison of the USB stage")
    parser.add_argument("--results", default=None, help="file name under benchmarks/results/")
    args = parser.parse_args()

    import os

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    if args.mem:
        os.environ["BIDS_USB_MEM_GB"] = str(args.mem)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from bids_usb.model import ModelBundle
    from bids_usb.workflows.participant import ImageJob, RunSettings, init_participant_wf
    from usb_model.synth.bids_writer import write_dataset

    root = args.keep or Path(tempfile.mkdtemp(prefix="bids_usb_bench_"))
    if args.paper:
        from paper_model import build_paper_checkpoint

        args.model = args.model or build_paper_checkpoint(root / "paper-model")
    bids = root / "bids"
    if not bids.exists():
        write_dataset(bids, participants=1, seed=11, n_healthy=0, voxel_size=(1.0, 1.0, 1.0), variety=False)
    anat = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    mask = bids / "sub-01" / "anat" / "sub-01_label-lesion_roi.nii.gz"
    bundle = ModelBundle.open(args.model)
    params = {}
    if args.steps:
        params["steps"] = args.steps
    settings = RunSettings(task="heal", params=params, device=args.device, omp_nthreads=args.threads)
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    job = ImageJob(anat=anat, entities={"subject": "01"}, lesion_mask=mask)
    wf = init_participant_wf([job], bundle, settings, bids, root / "out", work)
    from nipype import config as nipype_config

    nipype_config.set("execution", "remove_unnecessary_outputs", "false")  # keep the node's usb_costs.json
    wf.config.setdefault("execution", {})["remove_unnecessary_outputs"] = False
    start = time.perf_counter()
    graph = wf.run(plugin="Linear")
    total = time.perf_counter() - start
    stages = {}
    for node in graph.nodes():
        stages[node.name] = float(node.result.runtime.duration)
    preprocessing = sum(stages.get(s, 0.0) for s in PREPROCESSING)
    import nibabel as nib

    img = nib.load(str(anat))
    usb_node = next(n for n in graph.nodes() if n.name == "usb")
    node_costs = json.loads((Path(usb_node.output_dir()) / "usb_costs.json").read_text())
    compare = None if args.no_compare else compare_passes(bundle, usb_node, params, args.threads)
    result = {
        "command": "python benchmarks/participant.py " + " ".join(sys.argv[1:]),
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
            "mem_gb": args.mem,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "cpu_flags": cpu_flags(),
        },
        "usb_node": node_costs,
        "usb_stage_full_vs_edit": compare,
        "stages_seconds": stages,
        "preprocessing_seconds": preprocessing,
        "workflow_seconds": total,
        "peak_memory_mb": peak_memory_mb(node_costs, compare),
        "targets": {"preprocessing_seconds": 60, "workflow_seconds": 180},
    }
    for name, seconds in stages.items():
        print(f"{name:<16} {seconds:8.2f} s")
    print(f"{'preprocessing':<16} {preprocessing:8.2f} s   (target <= 60 s)")
    print(f"{'whole workflow':<16} {total:8.2f} s   (target <= 180 s)")
    print(f"{'peak memory':<16} {result['peak_memory_mb']:8.1f} MB")
    print_costs("USB node (as run)", node_costs)
    if compare:
        for how in ("full", "edit"):
            print_costs(f"USB stage, --ae-passes {how}", compare[how])
        print("edit vs full inside the edit region:", json.dumps(compare["difference"]))
    print(f"load average before {load_before}, after {result['environment']['load_average_after']}")
    RESULTS.mkdir(exist_ok=True)
    device = "cuda" if "cpu" not in result["environment"]["device"] else "cpu"
    out = RESULTS / (args.results or f"participant-{device}{'-paper' if args.paper else ''}.json")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


def cpu_flags() -> list[str]:
    """The CPU features that decide the kernels (AVX2/AVX-512, bf16, AMX, VNNI)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    keep = ("avx2", "fma", "avx512", "amx", "vnni", "bf16", "f16c")
    return sorted(f for f in flags if any(k in f for k in keep))


def print_costs(title: str, costs: dict) -> None:
    print(f"-- {title}")
    for s in costs["stages"]:
        print(f"   {s['stage']:<16} {s['seconds']:8.2f} s   peak {s['peak_rss_mb']:8.0f} MB")
    for p in costs["passes"]:
        print(
            f"   {p['kind']:<7} {p['region']:<6} {'x'.join(map(str, p['shape'])):<12} batch {p['batch']}  "
            f"tiles {p['tiles']}  {p['voxels'] / 1e6:6.2f} Mvoxel"
        )
    print(f"   {costs['n_passes']} passes, {costs['ae_voxels'] / 1e6:.2f} Mvoxel, peak {costs['peak_rss_mb']:.0f} MB")


def compare_passes(bundle, usb_node, params: dict, threads: int) -> dict:
    """The node's edit again on its own inputs, ``--ae-passes full`` then ``edit``: stage costs and
    the difference inside the edit region (the lesion and the blend band on the model grid)."""
    import time as _time

    import nibabel as nib
    import numpy as np

    from bids_usb.editing import run_edit
    from usb_model.composite import blend_weight
    from usb_model.costs import CostLog

    torch.set_num_threads(threads)
    inputs = usb_node.inputs
    image = np.asanyarray(nib.load(inputs.image).dataobj, dtype=np.float32)
    lesion = np.asanyarray(nib.load(inputs.lesion_mask).dataobj) > 0
    out = {}
    results = {}
    for how in ("full", "edit"):
        costs = CostLog()
        start = _time.perf_counter()
        results[how], _ = run_edit(
            bundle, "heal", image, lesion, {**params, "ae_passes": how}, seed=0, n_samples=1, device="cpu", costs=costs
        )
        out[how] = {**costs.summary(), "seconds": _time.perf_counter() - start}
    spacing = bundle.config.grid.voxel_size
    band = bundle.config.sampling.band_mm
    region = blend_weight(lesion, spacing, band[0], band[1]) > 0
    region |= lesion
    diff = {}
    for name, where in (("healed", lesion), ("change", region), ("fill_change", lesion)):
        a, b = getattr(results["edit"], name), getattr(results["full"], name)
        if a is None or b is None:
            continue
        d = (a - b).abs().numpy()[where]
        diff[name] = {"max": float(d.max()), "mean": float(d.mean()), "voxels": int(where.sum())}
    out["difference"] = diff
    return out


if __name__ == "__main__":
    main()
