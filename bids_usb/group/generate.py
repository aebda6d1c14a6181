"""``--group-task generate``: a synthetic cohort from a trained model, as a new BIDS dataset.

    bids_usb BIDS_DIR OUT group --group-task generate --model CKPT [--n-generate N | --masks DIR]
                                                      [--seed S] [--batch-size B] [--device D]

Without ``--masks``: N brains and their lesion masks, generated together from noise
(``USB.generate_pairs``), in batches of ``--batch-size`` (default: the config's batch size).
With ``--masks DIR`` (a folder of NIfTI masks, or a BIDS dataset whose
``_mask``/``_roi`` files are lesion masks): for every mask, ``--n-generate`` brains (default 1)
conditioned on it (``USB.generate_from_mask``); the masks must be in the model's template space
(MNI152NLin2009aSym, as the participant level's ``space-`` outputs and ATLAS's masks are) on any
grid, and are resampled onto the model grid by their world coordinates. BIDS_DIR is not read
beyond that: it may be the dataset holding the masks, or any directory (it is recorded as the
source).

OUT receives a raw BIDS dataset on the model grid (its template affine)::

    dataset_description.json, README.md, participants.tsv/.json, .bidsignore
    sub-g001/anat/sub-g001_T1w.nii.gz (+ .json)       the generated brain, [0, 1], float32
    sub-g001/anat/sub-g001_label-lesion_roi.nii.gz    its lesion mask (fMRIPrep's convention)
    derivatives/usb-generate/sub-g001/anat/sub-g001_desc-lesion_mask.nii.gz (+ "Type": "Lesion")

Reproducible: batch b (of mask k) is drawn with the seed SeedSequence([seed, k, b]); the same
seed, batch size, model and device give the same cohort. Provenance (the model's SHA-256, the
seed, the sampling parameters) is in every sidecar and in dataset_description.json.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from usb_model.bids import BIDS_VERSION

from ..discovery import lesion_masks
from ..errors import CannotCreateOutput, DataError, NoInput, UsageError
from ._common import pick_device, say, warn, written

DERIVATIVES_NAME = "usb-generate"

DEFAULT_N = 8
DESCRIPTION_TAG = "generate"  # GeneratedBy[0].Description starts with it: marks our cohorts


@dataclass
class MaskSource:
    path: Path
    data: np.ndarray  # bool, on the model grid
    volume_ml: float


def find_masks(root: Path) -> list[Path]:
    """Lesion masks under ``root``: a file; a BIDS dataset's lesion masks as pybids finds them
    (``layout.lesion_masks``, the participant level's rules); else every NIfTI in the folder."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"--masks {root} does not exist; give a folder of NIfTI masks or a BIDS dataset")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith(".")
    )
    if not (root / "dataset_description.json").is_file():
        return files
    return lesion_masks(root)


def mask_to_grid(path: Path, shape, affine) -> np.ndarray:
    """A template-space mask onto the model grid by world coordinates: linear resampling of the
    binary mask and a 0.5 threshold (partial volumes), or > 0 when that leaves nothing."""
    from nibabel.processing import resample_from_to

    from ..images import load_mask

    mask = load_mask(path)
    data = np.asanyarray(mask.dataobj).astype(np.float32)
    moved = np.asanyarray(
        resample_from_to(nib.Nifti1Image(data, mask.affine), (tuple(shape), np.asarray(affine)), order=1).dataobj
    )
    out = moved >= 0.5
    if not out.any() and data.any():
        out = moved > 0
    return out


def _batch_seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(1)[0])


def _is_ours(output_dir: Path) -> bool:
    try:
        meta = json.loads((output_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return any(
        isinstance(g, dict)
        and g.get("Name") == "bids_usb"
        and str(g.get("Description", "")).startswith(DESCRIPTION_TAG)
        for g in meta.get("GeneratedBy", []) or []
    )


def prepare_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise CannotCreateOutput(f"{output_dir} exists and is not a directory; choose another output folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not _is_ours(output_dir):
            raise CannotCreateOutput(
                f"{output_dir} is not empty and holds no cohort of --group-task generate; give an empty or new folder"
            )
        if not overwrite:
            raise CannotCreateOutput(
                f"{output_dir} already holds a generated cohort; pass --overwrite to replace it, or choose another folder"
            )
        for path in output_dir.iterdir():
            if path.name.startswith("sub-") or path.name in (
                "derivatives",
                "participants.tsv",
                "participants.json",
                "dataset_description.json",
                "README.md",
                ".bidsignore",
            ):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)


def _nifti(data: np.ndarray, affine: np.ndarray, dtype) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(np.asarray(affine), code=4)  # MNI152: the model grid lies in the template space
    img.set_sform(np.asarray(affine), code=4)
    return img


def run_generate(config) -> int:
    import torch
    from tqdm import tqdm

    from usb_model import __version__
    from usb_model.tasks import USB

    from .. import derivatives as d
    from ..directories import check_output_dir
    from ..model import TEMPLATE_SPACE, ModelBundle

    bids_dir: Path = config.execution.bids_dir
    if not bids_dir.is_dir():
        raise UsageError(
            f"bids_dir {bids_dir} is not a directory; for generate it may be any folder (e.g. the dataset holding --masks)"
        )
    bids_dir = bids_dir.resolve()
    output_dir = config.execution.output_dir.absolute()
    if (bids_dir / "dataset_description.json").is_file() or output_dir.resolve() == bids_dir:
        output_dir = check_output_dir(bids_dir, output_dir)  # never write into a dataset
    if config.workflow.model is None:
        raise UsageError(
            "generate needs a trained model: pass --model OUT/models/<name>/checkpoint (written by --group-task train)"
        )
    model = Path(config.workflow.model)
    bundle = ModelBundle.open(model)
    cfg = bundle.config
    device = pick_device(config.workflow.device)
    seed = config.execution.seed
    batch = int(config.group.batch_size or cfg.training.batch_size)
    shape, affine = tuple(cfg.grid.shape), np.asarray(bundle.template["affine"], dtype=np.float64)

    masks: list[MaskSource] = []
    if config.group.masks is not None:
        root = Path(config.group.masks)
        for path in find_masks(root):
            try:
                data = mask_to_grid(path, shape, affine)
            except DataError as exc:
                warn(f"{exc} (skipped)")
                continue
            if not data.any():
                warn(f"{path}: no lesion voxel falls on the model grid; is it in {TEMPLATE_SPACE} space? (skipped)")
                continue
            masks.append(MaskSource(path, data, float(data.sum()) * float(np.prod(cfg.grid.voxel_size)) / 1000.0))
        if not masks:
            raise NoInput(
                f"--masks {root}: no usable lesion mask found (NIfTI masks in {TEMPLATE_SPACE} space are needed)"
            )
        per_mask = int(config.group.n_generate or 1)
        total = per_mask * len(masks)
    else:
        per_mask = 0
        total = int(config.group.n_generate or DEFAULT_N)
    prepare_output(output_dir, config.group.overwrite)

    name = bundle.name
    model_info = {"Name": name, "SHA256": bundle.sha256, "Path": str(bundle.path.resolve()), "Config": cfg.name}
    sampling = {
        "Steps": cfg.sampling.steps,
        "DDIMEta": cfg.sampling.ddim_eta,
        "MaskThreshold": cfg.sampling.mask_threshold,
    }
    mode = "generate_from_mask" if masks else "generate_pairs"
    width = max(3, len(str(total)))
    deriv = output_dir / "derivatives" / DERIVATIVES_NAME
    usb = USB(bundle.load_networks(device), device=device)
    records: list[dict[str, Any]] = []

    def write(index: int, image: np.ndarray, mask: np.ndarray, provenance: dict[str, Any], source: Path | None) -> None:
        subject = {"subject": f"g{index + 1:0{width}d}"}
        sub = f"sub-{subject['subject']}"
        brain_path = d.derivative_path(output_dir, subject, cfg.grid.contrast)
        mask_path = d.derivative_path(deriv, subject, "mask", desc="lesion")
        raw_rel = brain_path.relative_to(output_dir).as_posix()
        d.write_nifti(_nifti(np.clip(image, 0.0, 1.0), affine, np.float32), brain_path)
        sources = [Path(source).resolve().as_uri()] if source is not None else []
        d.write_json(
            {
                "SkullStripped": True,
                "Description": f"Synthetic brain generated by USB ({mode}) on the model grid in {TEMPLATE_SPACE} space; intensities in [0, 1].",
                **({"Sources": sources} if sources else {}),
                "USB": {"Task": mode, "Model": model_info, **sampling, **provenance},
            },
            d.derivative_path(output_dir, subject, cfg.grid.contrast, ".json"),
        )
        binary = np.asarray(mask) > 0.5
        d.write_nifti(_nifti(binary, affine, np.uint8), d.derivative_path(output_dir, subject, "roi", label="lesion"))
        d.write_nifti(_nifti(binary, affine, np.uint8), mask_path)
        d.write_json(
            {
                "Type": "Lesion",
                "Sources": [f"bids:raw:{raw_rel}", *sources],
                "SpatialReference": f"bids:raw:{raw_rel}",
                "Description": (
                    "The lesion mask the brain was generated for, on the model grid."
                    if source is not None
                    else "The lesion mask generated together with the brain (thresholded decoder output)."
                ),
                "USB": {"Task": mode, "Model": model_info, **provenance},
            },
            d.derivative_path(deriv, subject, "mask", ".json", desc="lesion"),
        )
        records.append(
            {
                "participant_id": sub,
                "lesion_volume_ml": round(float(binary.sum()) * float(np.prod(cfg.grid.voxel_size)) / 1000.0, 3),
                "mask_source": str(source) if source is not None else "n/a",
                "seed": provenance["Seed"],
            }
        )

    say(
        f"generating {total} brain(s) with {bundle.path} ({mode}, batches of {batch}, seed {seed}, device {device}) into {output_dir}"
    )
    index = 0
    with tqdm(total=total, desc="generating", unit="brain", file=sys.stderr, dynamic_ncols=True) as bar:
        if masks:
            for k, source in enumerate(masks):
                for b, start in enumerate(range(0, per_mask, batch)):
                    n = min(batch, per_mask - start)
                    s = _batch_seed(seed, k, b)
                    with torch.no_grad():
                        result = usb.generate_from_mask(source.data.astype(np.float32), n, seed=s)
                    for j in range(n):
                        write(
                            index,
                            result.images[j].numpy(),
                            source.data,
                            {
                                "Seed": s,
                                "CohortSeed": seed,
                                "MaskIndex": k,
                                "BatchIndex": b,
                                "IndexInBatch": j,
                                "BatchSize": batch,
                            },
                            source.path,
                        )
                        index += 1
                    bar.update(n)
        else:
            for b, start in enumerate(range(0, total, batch)):
                n = min(batch, total - start)
                s = _batch_seed(seed, 0, b)
                with torch.no_grad():
                    result = usb.generate_pairs(n, seed=s)
                for j in range(n):
                    write(
                        index,
                        result.images[j].numpy(),
                        result.masks[j].numpy(),
                        {"Seed": s, "CohortSeed": seed, "BatchIndex": b, "IndexInBatch": j, "BatchSize": batch},
                        None,
                    )
                    index += 1
                bar.update(n)

    columns = ["participant_id", "lesion_volume_ml", "mask_source", "seed"]
    d.write_text(
        "\n".join(["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in records]) + "\n",
        output_dir / "participants.tsv",
    )
    d.write_json(
        {
            "participant_id": {"Description": "Generated brain (g = generated)"},
            "lesion_volume_ml": {"Description": "Volume of its lesion mask on the model grid", "Units": "mL"},
            "mask_source": {
                "Description": "The mask it was generated for (generate_from_mask), or n/a (generated with it)"
            },
            "seed": {"Description": "Seed of its batch: SeedSequence([cohort seed, mask index, batch index])"},
        },
        output_dir / "participants.json",
    )
    d.write_text("*_roi.nii.gz\n", output_dir / ".bidsignore")
    grid = f"{'x'.join(map(str, shape))} at {'x'.join(f'{v:g}' for v in cfg.grid.voxel_size)} mm"
    d.write_text(
        f"# Synthetic cohort generated by USB\n\n{total} brains generated by bids_usb {__version__} "
        f"(`group --group-task generate`, {mode}) with the model {bundle.path} (SHA-256 {bundle.sha256}), seed {seed}, "
        f"batches of {batch}, on the model grid ({grid}, {TEMPLATE_SPACE} space). Images are skull-stripped, intensities in [0, 1]. "
        f"Lesion masks: `sub-*/anat/*_label-lesion_roi.nii.gz` (listed in .bidsignore) and `derivatives/{DERIVATIVES_NAME}/` "
        '(`desc-lesion_mask`, "Type": "Lesion"). NO real participant data are included.\n',
        output_dir / "README.md",
    )
    generated_by = {
        "Name": "bids_usb",
        "Version": __version__,
        "CodeURL": d.CODE_URL,
        "Description": f"{DESCRIPTION_TAG}: {mode}, {total} brains, model {name} (SHA-256 {bundle.sha256}), seed {seed}, batch size {batch}, "
        f"{cfg.sampling.steps} DDIM steps (eta {cfg.sampling.ddim_eta})",
    }
    d.write_json(
        {
            "Name": f"USB synthetic {cfg.grid.contrast} lesion cohort (derivatives: lesion masks)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [generated_by],
            "SourceDatasets": [{"URL": "../../"}],
            "DatasetLinks": {"raw": "../../"},
        },
        deriv / "dataset_description.json",
    )
    d.write_json(
        {
            "Name": f"USB synthetic {cfg.grid.contrast} lesion cohort",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["bids_usb (synthetic data)"],
            "GeneratedBy": [generated_by],
            "SourceDatasets": [{"URL": bundle.path.resolve().as_uri(), "Version": f"sha256:{bundle.sha256}"}]
            + ([{"URL": Path(config.group.masks).resolve().as_uri()}] if masks else []),
        },
        output_dir / "dataset_description.json",
    )
    say(f"wrote {total} brain(s) to {output_dir}")
    written(output_dir)
    return 0
