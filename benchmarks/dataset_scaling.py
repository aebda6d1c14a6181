"""Per-task overhead against dataset size: validation and pybids indexing, with and without
the shared index of ``--bids-database-dir`` (issue 24 item 6).

Every task of a SLURM array (one participant each) validates and indexes the whole dataset
before it selects its participant. This writes datasets of tiny images (8^3 T1w and a
``label-lesion_roi`` mask per participant) in a temporary folder and times, per size:

- ``validation``: ``bids-validator-deno`` on the dataset (what a task pays without
  ``--skip-bids-validation``);
- ``index``: ``bids_usb.dataset.collect`` for one participant (discovery up to the point where
  images would be preprocessed) without a shared index;
- ``index_build``: the same with ``--bids-database-dir`` on an empty folder (the first run);
- ``index_reuse``: the same again (every later task).

Wall seconds and the CPU seconds of this process (and of the validator, a child process) are
written, since the machine may be busy. Usage: ``nice -n 10 python benchmarks/dataset_scaling.py
[--sizes 50 500 2000]``; results in benchmarks/results/dataset-scaling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "dataset-scaling.json"


def make_dataset(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": f"scaling {n}", "BIDSVersion": "1.10.0"}))
    (root / "README").write_text("Tiny images for timing the per-task overhead.\n")
    (root / ".bidsignore").write_text("*_roi.nii.gz\n")
    image = np.zeros((8, 8, 8), np.int16)
    image[2:6, 2:6, 2:6] = 300
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[3:5, 3:5, 3:5] = 1
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    t1w, roi = nib.Nifti1Image(image, affine), nib.Nifti1Image(mask, affine)
    for img in (t1w, roi):
        img.header.set_xyzt_units("mm")
    for i in range(1, n + 1):
        anat = root / f"sub-{i:04d}" / "anat"
        anat.mkdir(parents=True)
        nib.save(t1w, str(anat / f"sub-{i:04d}_T1w.nii.gz"))
        nib.save(roi, str(anat / f"sub-{i:04d}_label-lesion_roi.nii.gz"))
        (anat / f"sub-{i:04d}_T1w.json").write_text('{"RepetitionTime": 2.0}\n')
    return root


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    value = fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return value, {
        "wall_s": round(time.perf_counter() - wall, 3),
        "cpu_s": round(time.process_time() - cpu + child, 3),
    }


def measure(root: Path, db: Path, n: int) -> dict:
    from bids_usb.config import RunConfig
    from bids_usb.dataset import collect

    row: dict = {"participants": n, "files": sum(1 for _ in root.rglob("*") if _.is_file())}
    if shutil.which("bids-validator-deno"):
        from bids_usb.validation import validate_or_raise

        _, row["validation"] = _timed(lambda: validate_or_raise(root))
    else:
        row["validation"] = "bids-validator-deno is not installed"

    def config(database_dir):
        opts = {"bids_dir": root, "output_dir": root.parent / "out", "analysis_level": "participant"}
        opts["participant_label"] = ["0001"]
        if database_dir is not None:
            opts["bids_database_dir"] = database_dir
        return RunConfig.from_options(opts)

    for key, database_dir in (("index", None), ("index_build", db), ("index_reuse", db)):
        result, row[key] = _timed(lambda d=database_dir: collect(root, config(d), "T1w"))
        assert [i.subject for i in result.inputs] == ["0001"] and result.inputs[0].lesion_mask is not None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 2000])
    args = parser.parse_args()
    import bids

    rows = []
    with tempfile.TemporaryDirectory(prefix="bids_usb_scaling_") as tmp:
        for n in args.sizes:
            root = make_dataset(Path(tmp) / f"ds{n}" / "bids", n)
            row = measure(root, Path(tmp) / f"ds{n}" / "db", n)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "what": "per-task overhead of one array task: validation and pybids indexing (collect), without and with --bids-database-dir",
        "command": "nice -n 10 python benchmarks/dataset_scaling.py --sizes " + " ".join(map(str, args.sizes)),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, shared with a training run at nice 19",
        "pybids": bids.__version__,
        "rows": rows,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
