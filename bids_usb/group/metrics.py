"""``--group-task metrics``: judge the participant level's outputs, and generated cohorts.

Per image found in OUTPUT_DIR (``sub-<l>/[ses-<s>/]anat/<stem>_desc-healed_<T1w|FLAIR>.nii.gz``
or ``..._desc-lesioned_...``, the native-grid outputs of the participant level):

- healed: against the healthy ground truth ``<stem>_desc-healthy_<suffix>.nii.gz`` of the
  ``--ground-truth`` derivatives dataset (default: the first dataset under
  ``BIDS_DIR/derivatives/`` holding such files, e.g. ``usb-synth``), with its
  ``desc-lesion_mask`` and ``desc-brain_mask`` (the output's own masks when the ground truth has
  none): mean absolute error, PSNR and SSIM over the brain, inside the lesion, and in the brain
  outside it, and the lesion volume. Intensities are divided by the data range, the ground
  truth's max - min inside the brain, so L1 is a fraction of the range and PSNR uses range 1.
- lesioned (embed): the change map |output - input| (the input found through the sidecar's
  ``Sources``) thresholded at ``CHANGE_THRESHOLD`` of the input's brain range, its Dice with
  the requested mask (the output's ``desc-lesion_mask``), both volumes, and L1/PSNR/SSIM
  against the input (outside the lesion they measure how much of the brain was preserved).
- cohort: MMD (RBF) and KID between intensity-histogram features (usb_model.metrics) of the
  healed images and of their ground truths; and, when OUTPUT_DIR is a cohort written by
  ``--group-task generate``, between the generated brains and the reference brains
  (``--ground-truth``'s healthy images, else BIDS_DIR's images).

Writes ``OUTPUT_DIR/group_usb.tsv`` (one row per image), ``group_usb.json`` (rows, summaries,
cohort distances, definitions) and ``group.html``. Images without a ground truth are named in a
warning and left out; the others are measured (exit 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..derivatives import derivative_path
from ..discovery import bids_layout
from ..errors import DataError, NoInput, UsageError
from ._common import add_bidsignore, finite_or_text, say, tsv_cell, warn, written

#: A voxel of an embedded image counts as changed when it differs from the input by more than
#: this fraction of the input brain's intensity range.
CHANGE_THRESHOLD = 0.05
#: What a participant-level output image is: its desc and suffix (native space: no space-).
OUTPUT_DESCS = {"healed": "heal", "lesioned": "embed"}
CONTRASTS = ("T1w", "FLAIR")
REGIONS = ("brain", "lesion", "outside")
COLUMNS = [
    "participant_id",
    "session",
    "image",
    "task",
    "reference",
    "lesion_volume_ml",
    "lesion_mask_from",
    *(f"{m}_{r}" for m in ("l1", "psnr", "ssim") for r in REGIONS),
    "dice",
    "changed_volume_ml",
    "data_range",
    "source",
    "ground_truth",
]
DEFINITIONS = {
    "l1_<region>": "mean absolute difference over the region, in units of the data range (torchmetrics mean_absolute_error)",
    "psnr_<region>": "10 log10(range^2 / MSE) over the region, dB (torchmetrics peak_signal_noise_ratio); inf when identical",
    "ssim_<region>": "mean over the region of scikit-image's SSIM map (structural_similarity, full=True, 7-voxel window) of the whole volume",
    "regions": "brain: the brain mask; lesion: the lesion mask; outside: brain and not lesion",
    "data_range": "max - min of the reference (ground truth for heal, input for embed) inside the brain, in the image's units",
    "reference": "ground_truth: the healthy image before the lesion (heal); input: the image the lesion was drawn into (embed)",
    "lesion_mask_from": "ground_truth: the ground truth's desc-lesion_mask; output: the participant level's desc-lesion_mask; none: no lesion",
    "dice": f"embed: Dice (MONAI) of |output - input| > {CHANGE_THRESHOLD} x data_range with the requested lesion mask",
    "lesion_volume_ml": "volume of the lesion mask used for the regions (ground truth's when it has one)",
    "cohort": (
        "MMD^2 with an RBF kernel (median heuristic) and KID (torchmetrics, polynomial kernel) on 32-bin intensity "
        "histograms inside the brain, intensities divided by their 99th percentile"
    ),
}


@dataclass
class Output:
    """One participant-level output image and what belongs to it."""

    path: Path
    entities: dict[str, Any]  # pybids' entities of ``path``
    task: str  # heal | embed
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return self.entities["subject"]

    @property
    def session(self) -> str | None:
        return self.entities.get("session")

    @property
    def suffix(self) -> str:
        return self.entities["suffix"]

    def companion(self, root: Path, suffix: str, **entities: Any) -> Path | None:
        """The file of ``root`` that shares this image's entities, with ``suffix`` and the given
        derivative entities (``desc="healthy"``; none for the raw input); None when absent.
        Named by the same function that names the participant level's outputs."""
        for extension in (".nii.gz", ".nii"):
            path = derivative_path(root, self.entities, suffix, extension, **entities)
            if path.is_file():
                return path
        return None


def find_outputs(output_dir: Path, participants: list[str] | None = None) -> list[Output]:
    """The participant level's native-space outputs in OUTPUT_DIR, found by pybids."""
    from bids.layout import Query

    found = []
    files = bids_layout(output_dir).get(
        datatype="anat",
        desc=list(OUTPUT_DESCS),
        suffix=list(CONTRASTS),
        extension=[".nii", ".nii.gz"],
        space=Query.NONE,
        subject=list(participants) if participants else Query.ANY,
    )
    for item in sorted(files, key=lambda f: f.path):
        path = Path(item.path)
        entities = item.get_entities()
        out = Output(path=path, entities=entities, task=OUTPUT_DESCS[entities["desc"]])
        sidecar = path.with_name(path.name.split(".nii")[0] + ".json")
        if sidecar.is_file():
            try:
                out.sidecar = json.loads(sidecar.read_text())
            except ValueError:
                out.sidecar = {}
        found.append(out)
    return found


def _healthy_images(root: Path) -> list:
    """The ``desc-healthy`` T1w/FLAIR images of a derivatives dataset, as pybids files."""
    return bids_layout(root).get(datatype="anat", desc="healthy", suffix=list(CONTRASTS), extension=[".nii", ".nii.gz"])


def find_ground_truth(bids_dir: Path, given: Path | None) -> Path | None:
    if given is not None:
        if not given.is_dir():
            raise UsageError(
                f"--ground-truth {given} is not a directory; give a derivatives dataset holding *_desc-healthy_T1w.nii.gz images"
            )
        return given.resolve()
    derivatives = bids_dir / "derivatives"
    if derivatives.is_dir():
        for candidate in sorted(p for p in derivatives.iterdir() if p.is_dir()):
            if _healthy_images(candidate):
                return candidate.resolve()
    return None


def _load(path: Path) -> nib.Nifti1Image:
    from ..images import load_image

    return load_image(path)


def _data(img) -> np.ndarray:
    return np.asanyarray(img.dataobj).astype(np.float64)


def _mask(path: Path | None, like) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    img = nib.load(str(path))
    if img.shape[:3] != like.shape[:3] or not np.allclose(img.affine, like.affine, atol=1e-3):
        raise DataError(f"{path}: not on the grid of {like.get_filename()}; the masks must lie on the image's grid")
    return np.asanyarray(img.dataobj) > 0.5


def _voxel_ml(img) -> float:
    return float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def _region_metrics(
    pred: np.ndarray, ref: np.ndarray, regions: dict[str, np.ndarray], data_range: float
) -> dict[str, float]:
    from usb_model.metrics import masked_l1, masked_psnr, region_mean, ssim_map

    a, b = pred / data_range, ref / data_range
    smap = ssim_map(a, b, data_range=1.0)
    out = {}
    for name, region in regions.items():
        out[f"l1_{name}"] = masked_l1(a, b, region)
        out[f"psnr_{name}"] = masked_psnr(a, b, region, data_range=1.0)
        out[f"ssim_{name}"] = region_mean(smap, region)
    return out


def _range(ref: np.ndarray, brain: np.ndarray, what: Path) -> float:
    values = ref[brain]
    if values.size == 0:
        raise DataError(f"{what}: the brain mask is empty; cannot measure")
    span = float(values.max() - values.min())
    if not span > 0:
        raise DataError(f"{what}: the image is constant inside the brain; cannot measure")
    return span


def measure_heal(out: Output, output_dir: Path, gt_dir: Path) -> dict[str, Any] | None:
    """Metrics of a healed image against its ground truth; None when there is no ground truth."""
    gt_path = out.companion(gt_dir, out.suffix, desc="healthy")
    if gt_path is None:
        return None
    healed_img, gt_img = _load(out.path), _load(gt_path)
    if healed_img.shape[:3] != gt_img.shape[:3] or not np.allclose(healed_img.affine, gt_img.affine, atol=1e-3):
        raise DataError(
            f"{out.path}: not on the grid of its ground truth {gt_path}; the ground truth must be on the input image's grid"
        )
    healed, gt = _data(healed_img), _data(gt_img)
    brain_path = out.companion(gt_dir, "mask", desc="brain") or out.companion(output_dir, "mask", desc="brain")
    brain = _mask(brain_path, gt_img)
    if brain is None:
        brain = gt > 0
    lesion_from = "ground_truth"
    lesion = _mask(out.companion(gt_dir, "mask", desc="lesion"), gt_img)
    if lesion is None:
        lesion = _mask(out.companion(output_dir, "mask", desc="lesion"), gt_img)
        lesion_from = "output" if lesion is not None else "none"
    if lesion is None:
        lesion = np.zeros(gt.shape, dtype=bool)
    lesion &= brain
    data_range = _range(gt, brain, gt_path)
    row = _row(out, "ground_truth", lesion_from, gt_path)
    row.update(_region_metrics(healed, gt, {"brain": brain, "lesion": lesion, "outside": brain & ~lesion}, data_range))
    row["lesion_volume_ml"] = float(lesion.sum()) * _voxel_ml(gt_img)
    row["data_range"] = data_range
    row["_brain_mask"] = str(brain_path) if brain_path else None  # for the cohort features; not written
    return row


def _raw_input(out: Output, bids_dir: Path) -> Path | None:
    for source in out.sidecar.get("Sources", []) or []:
        if isinstance(source, str) and source.startswith("bids:raw:"):
            path = bids_dir / source[len("bids:raw:") :]
            if path.is_file():
                return path
    return out.companion(bids_dir, out.suffix)


def measure_embed(out: Output, output_dir: Path, bids_dir: Path) -> dict[str, Any] | None:
    """Change map vs requested mask for an embedded lesion; None when the input is missing."""
    from usb_model.metrics import dice

    source = _raw_input(out, bids_dir)
    if source is None:
        return None
    lesioned_img, input_img = _load(out.path), _load(source)
    if lesioned_img.shape[:3] != input_img.shape[:3] or not np.allclose(
        lesioned_img.affine, input_img.affine, atol=1e-3
    ):
        raise DataError(f"{out.path}: not on the grid of its input {source}")
    requested = _mask(out.companion(output_dir, "mask", desc="lesion"), input_img)
    if requested is None:
        expected = derivative_path(output_dir, out.entities, "mask", desc="lesion").name
        raise DataError(f"{out.path}: the requested lesion mask {expected} is missing next to it")
    lesioned, original = _data(lesioned_img), _data(input_img)
    brain = _mask(out.companion(output_dir, "mask", desc="brain"), input_img)
    if brain is None:
        brain = original > 0
    data_range = _range(original, brain, source)
    changed = np.abs(lesioned - original) > CHANGE_THRESHOLD * data_range
    row = _row(out, "input", "output", None)
    row["source"] = str(source)
    row.update(
        _region_metrics(
            lesioned, original, {"brain": brain, "lesion": requested, "outside": brain & ~requested}, data_range
        )
    )
    row["dice"] = dice(changed, requested)
    row["lesion_volume_ml"] = float(requested.sum()) * _voxel_ml(input_img)
    row["changed_volume_ml"] = float(changed.sum()) * _voxel_ml(input_img)
    row["data_range"] = data_range
    return row


def _row(out: Output, reference: str, lesion_from: str, gt_path: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(
        {
            "participant_id": f"sub-{out.subject}",
            "session": out.session,
            "image": out.path.name,
            "task": out.task,
            "reference": reference,
            "lesion_mask_from": lesion_from,
            "source": str(out.path),
            "ground_truth": str(gt_path) if gt_path else None,
        }
    )
    return row


# --------------------------------------------------------------------------------------------
# Cohort distances
# --------------------------------------------------------------------------------------------


def _features(path: Path, mask_path: Path | None = None) -> np.ndarray:
    from usb_model.metrics import intensity_features

    img = _load(path)
    mask = _mask(mask_path, img) if mask_path is not None else None
    return intensity_features(_data(img), mask)


def _distance(a: list[np.ndarray], b: list[np.ndarray], seed: int) -> dict[str, Any]:
    from usb_model.metrics import kid, mmd_rbf

    result: dict[str, Any] = {"n_a": len(a), "n_b": len(b)}
    if len(a) < 2 or len(b) < 2:
        result["note"] = "needs at least 2 images on each side"
        return result
    x, y = np.stack(a), np.stack(b)
    if min(len(a), len(b)) < 10:
        result["note"] = "fewer than 10 images on a side: the unbiased estimates are very noisy (and can be negative)"
    result["mmd_rbf"] = mmd_rbf(x, y)
    result["kid_mean"], result["kid_std"] = kid(x, y, subsets=100, subset_size=1000, seed=seed)
    return result


def _generated_cohort(output_dir: Path) -> list[Path]:
    """The images of OUTPUT_DIR when it is a cohort written by ``--group-task generate``."""
    desc = output_dir / "dataset_description.json"
    try:
        meta = json.loads(desc.read_text())
    except (OSError, ValueError):
        return []
    ours = any(
        isinstance(g, dict) and g.get("Name") == "bids_usb" and str(g.get("Description", "")).startswith("generate")
        for g in meta.get("GeneratedBy", []) or []
    )
    if not ours:
        return []
    return _raw_images(output_dir)


def _raw_images(root: Path) -> list[Path]:
    """The raw T1w/FLAIR images of a BIDS dataset (no ``desc-``: not a derivative)."""
    from bids.layout import Query

    files = bids_layout(root).get(
        datatype="anat", suffix=list(CONTRASTS), desc=Query.NONE, extension=[".nii", ".nii.gz"], return_type="file"
    )
    return sorted(Path(f) for f in files)


def _reference_cohort(bids_dir: Path, gt_dir: Path | None) -> tuple[list[tuple[Path, Path | None]], str]:
    if gt_dir is not None:
        pairs = []
        for f in sorted(_healthy_images(gt_dir), key=lambda f: f.path):
            image = Output(path=Path(f.path), entities=f.get_entities(), task="heal")
            pairs.append((image.path, image.companion(gt_dir, "mask", desc="brain")))
        return pairs, f"the healthy images of {gt_dir}"
    images = _raw_images(bids_dir)
    return [(p, None) for p in images], f"the images of {bids_dir} (non-zero voxels: skull-stripped images are assumed)"


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for task in ("heal", "embed"):
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        for column in COLUMNS:
            values = [r.get(column) for r in mine]
            numbers = [
                float(v)
                for v in values
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
            ]
            if not numbers or column in ("data_range",):
                continue
            finite = [v for v in numbers if math.isfinite(v)]
            stats[f"{task}: {column}"] = {
                "n": len(numbers),
                "mean": float(np.mean(finite)) if finite else math.inf,
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                "median": float(np.median(numbers)),
                "n_inf": len(numbers) - len(finite),
            }
    return stats


def run_metrics(config) -> int:
    from usb_model import __version__

    from ..derivatives import write_json, write_text
    from ..reports.group import write_metrics_report

    bids_dir: Path = config.execution.bids_dir
    if not bids_dir.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory; give the dataset the participant level read")
    bids_dir = bids_dir.resolve()
    output_dir: Path = config.execution.output_dir.absolute()
    if not output_dir.is_dir():
        raise NoInput(
            f"output_dir {output_dir} does not exist; run the participant level first (or --group-task generate)"
        )
    gt_dir = find_ground_truth(bids_dir, config.group.ground_truth)
    participants = list(config.execution.participant_labels) if config.execution.participant_labels else None
    outputs = find_outputs(output_dir, participants)
    generated = _generated_cohort(output_dir)
    if not outputs and not generated:
        raise NoInput(
            f"{output_dir}: no participant-level output (sub-*/anat/*_desc-healed_T1w.nii.gz or *_desc-lesioned_*) "
            "and no generated cohort to measure; run the participant level into this folder first"
        )

    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    failed: list[str] = []
    for out in outputs:
        try:
            if out.task == "heal":
                row = measure_heal(out, output_dir, gt_dir) if gt_dir is not None else None
            else:
                row = measure_embed(out, output_dir, bids_dir)
        except DataError as exc:
            warn(str(exc))
            failed.append(out.path.name)
            continue
        if row is None:
            missing.append(out.path.name)
        else:
            rows.append(row)
    notes = []
    if missing:
        what = f"no ground truth in {gt_dir}" if gt_dir is not None else "no ground truth (pass --ground-truth DIR)"
        message = f"{len(missing)} image(s) have {what} or no input and are left out: {', '.join(missing)}"
        warn(message)
        notes.append(message)
    if failed:
        notes.append(f"{len(failed)} image(s) could not be measured: {', '.join(failed)}")

    cohort: dict[str, Any] = {}
    healed_rows = [r for r in rows if r["task"] == "heal"]
    if len(healed_rows) >= 2:
        masks = [Path(r["_brain_mask"]) if r.get("_brain_mask") else None for r in healed_rows]
        a = [_features(Path(r["ground_truth"]), m) for r, m in zip(healed_rows, masks)]
        b = [_features(Path(r["source"]), m) for r, m in zip(healed_rows, masks)]
        cohort["healed vs ground truth"] = _distance(a, b, config.execution.seed)
    for r in rows:
        r.pop("_brain_mask", None)
    if generated:
        reference, described = _reference_cohort(bids_dir, gt_dir)
        a = [_features(p, m) for p, m in reference]
        b = [_features(p) for p in generated]
        cohort["generated vs reference"] = {**_distance(a, b, config.execution.seed), "reference": described}

    if not rows and not cohort:
        raise NoInput(f"nothing could be measured in {output_dir}: " + ("; ".join(notes) or "no ground truth"))

    summary = {
        "GeneratedBy": [{"Name": "bids_usb", "Version": __version__, "Description": "group --group-task metrics"}],
        "bids_dir": str(bids_dir),
        "ground_truth": str(gt_dir) if gt_dir else None,
        "change_threshold": CHANGE_THRESHOLD,
        "definitions": DEFINITIONS,
        "metrics": _summary(rows),
        "cohort": cohort,
        "cohort_note": DEFINITIONS["cohort"],
        "left_out": {"no_ground_truth_or_input": missing, "failed": failed},
        "rows": rows,
    }
    lines = ["\t".join(COLUMNS)] + ["\t".join(tsv_cell(r.get(c)) for c in COLUMNS) for r in rows]
    tsv = write_text("\n".join(lines) + "\n", output_dir / "group_usb.tsv")
    js = write_json(finite_or_text(summary), output_dir / "group_usb.json")
    page = write_metrics_report(output_dir, rows, summary, COLUMNS, notes)
    add_bidsignore(output_dir)
    say(f"measured {len(rows)} image(s)" + (f"; {len(missing)} without ground truth" if missing else ""))
    for path in (tsv, js, page):
        written(path)
    return 0
