"""Which finished participant runs would a change of ``auto``'s fill choice touch?

A rule of ``usb_model.fill.auto_choice`` that changes no lesion's fill in a run leaves that run's
output as it was (the pipeline is deterministic from the same inputs), so only the runs it
touches need the participant level again. For each scan of each healing-benchmark work directory
(``benchmarks/healing.py --work``), the choice is made twice on the inputs its fills saw, once
under the module constants given by ``--before`` and once as the code stands: on the native grid
(``bids_usb.native.native_fill``: the file as given, the healed mask, the mask as given, the brain
mask) and on the model grid (``usb_model.tasks``: the model-grid image and masks, no brain mask).

    python benchmarks/fill_choice_changes.py --before AUTO_GREY_TISSUE=None,AUTO_LOCAL_ML=2.5 \
        --results fill-choice-changes.json WORK [WORK ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.utils.filemanip import loadpkl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import usb_model.fill as fill_module  # noqa: E402
from usb_model.atomic import write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _constants(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=", 1)
        if not hasattr(fill_module, name):
            raise SystemExit(f"--before: usb_model.fill has no {name}")
        out[name] = None if value == "None" else type(getattr(fill_module, name) or 0.0)(value)
    return out


def _choices(before: dict, image, lesion, spacing, given, brain) -> tuple[np.ndarray, np.ndarray]:
    """The choice map under ``before`` and as the code stands."""
    current = {name: getattr(fill_module, name) for name in before}

    def choose():
        return fill_module.auto_choice(
            image,
            lesion,
            spacing=spacing,
            given=given,
            given_dark=fill_module.GIVEN_DARK_RATIO if given is not None else None,
            brain=brain,
        )

    for name, value in before.items():
        setattr(fill_module, name, value)
    try:
        old = choose()
    finally:
        for name, value in current.items():
            setattr(fill_module, name, value)
    return old, choose()


def _mask(path, like=None) -> np.ndarray | None:
    if not path or not Path(str(path)).is_file():
        return None
    data = np.asanyarray(nib.load(str(path)).dataobj) > 0
    return data if like is None else data & like


def _changed(before: dict, image_path, lesion, given, brain) -> int:
    """Voxels of ``lesion`` whose fill choice differs between ``before`` and the code as it stands."""
    image = nib.load(str(image_path))
    old, new = _choices(
        before, np.asanyarray(image.dataobj, dtype=np.float32), lesion, image.header.get_zooms()[:3], given, brain
    )
    return int((old != new).sum())


def scan_changes(workflow: Path, before: dict) -> dict:
    """Voxels whose fill choice changes, native and model grid, for one scan's workflow directory."""
    native_in = loadpkl(workflow / "to_native" / "_inputs.pklz")
    model_in = loadpkl(workflow / "usb" / "_inputs.pklz")
    lesion = _mask(native_in["lesion_native"])
    brain = _mask(native_in["brain_mask"])
    model_lesion = _mask(model_in["lesion_mask"])
    return {
        "native_changed": _changed(
            before,
            native_in["anat"],
            lesion,
            _mask(native_in.get("given_native")),
            None if brain is None else brain | lesion,
        ),
        "native_lesion": int(lesion.sum()),
        "model_changed": _changed(
            before, model_in["image"], model_lesion, _mask(model_in.get("given_mask"), model_lesion), None
        ),
        "model_lesion": int(model_lesion.sum()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="+", type=Path, help="benchmarks/healing.py --work directories")
    parser.add_argument("--before", required=True, help="NAME=VALUE,... of usb_model.fill: the rule before")
    parser.add_argument("--results", default="fill-choice-changes.json")
    args = parser.parse_args(argv)
    before = _constants(args.before)
    clock = time.perf_counter()
    runs = {}
    for work in args.work:
        scans = {}
        for workflow in sorted((work / "work" / "bids_usb_wf").glob("image_sub_*_wf")):
            scans[workflow.name] = scan_changes(workflow, before)
            print(work, workflow.name, scans[workflow.name], flush=True)
        runs[str(work)] = scans
    untouched = [
        w for w, scans in runs.items() if not any(s["native_changed"] or s["model_changed"] for s in scans.values())
    ]
    result = {
        "command": "python benchmarks/fill_choice_changes.py --before "
        + args.before
        + f" --results {args.results} "
        + " ".join(str(w) for w in args.work),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - clock, 1),
        "before": args.before,
        "runs_untouched": untouched,
        "runs": runs,
    }
    write_text(RESULTS / args.results, json.dumps(result, indent=1) + "\n")
    print(f"untouched: {len(untouched)} of {len(runs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
