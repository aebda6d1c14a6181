"""``usb-synth-dataset``: write a small synthetic BIDS dataset with known healthy ground truth.

Why: the README demo, the end-to-end tests and the benchmarks need BIDS data with lesions
whose healthy counterpart is known, and no such real data is on these machines. Each
participant is a synthetic brain (``healthy.synth_healthy`` from the MNI template) with,
for most of them, a random lesion drawn in, placed at a random head pose on its own scanner
grid. Participants cycle through RAS, LPS, PIR with 1x1x3-like voxels (thick sagittal slices)
and an oblique LAS grid (``--no-variety`` keeps them all RAS), so downstream code meets them.

Layout (raw dataset in OUT, derivatives in OUT/derivatives/usb-synth)::

    sub-<l>/anat/sub-<l>_T1w.nii.gz (or _FLAIR)      the (lesioned) image, int16 scanner units
    sub-<l>/anat/sub-<l>_label-lesion_roi.nii.gz      the lesion (fMRIPrep's convention; .bidsignore)
    derivatives/usb-synth/sub-<l>/anat/
        sub-<l>_desc-healthy_T1w.nii.gz               healthy ground truth, same grid and units
        sub-<l>_desc-lesion_mask.nii.gz               the lesion, sidecar "Type": "Lesion"
        sub-<l>_desc-brain_mask.nii.gz                the brain, sidecar "Type": "Brain"

Images are skull-stripped-looking (zero outside the brain; there is no skull in the
template); the README and the sidecars say so. Every file is written to a temporary name and
renamed (never half-written), dataset_description.json last; the same seed gives
byte-identical files.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import nibabel as nib
import numpy as np

from usb_model import __version__
from usb_model.atomic import write_bytes
from usb_model.bids import BIDS_VERSION
from usb_model.config import GridConfig
from usb_model.synth.encode import encode_lesion
from usb_model.synth.healthy import synth_healthy
from usb_model.synth.lesions import SIZE_PRESETS_ML, lesion_volume_ml, random_lesion
from usb_model.synth.native import NativeGrid, native_grid, random_pose, to_native
from usb_model.template import load_template, template_brain_centre

__all__ = ["write_dataset", "ParticipantSpec", "main", "DERIVATIVES_NAME"]

DERIVATIVES_NAME = "usb-synth"
GENERATOR = "usb-synth-dataset"

#: Field of view of the synthesis grid (template world, mm): the MNI brain plus deformations.
SYNTH_FOV_MM = (184.0, 224.0, 192.0)
#: Field of view of the native grids (left-right, anterior-posterior, inferior-superior), mm.
NATIVE_FOV_MM = (200.0, 248.0, 216.0)
#: A native voxel belongs to the lesion mask when at least this fraction of it is lesion, or
#: when the lesion changes its intensity by more than VISIBLE_CHANGE (of the [0, 1] range): like
#: a generous rater, who also marks thick-slice voxels that a thin lesion visibly darkens. So
#: outside the mask the raw image and the healthy ground truth differ by less than that.
LESION_FRACTION = 0.25
VISIBLE_CHANGE = 0.05


class OutputExistsError(click.ClickException):
    exit_code = 73  # EX_CANTCREAT, as the BIDS Execution spec recommends


@dataclass(frozen=True)
class ParticipantSpec:
    """Everything that varies between participants, besides the random brain and lesion."""

    label: str
    lesion: bool
    orientation: str
    voxel_size: tuple[float, float, float]
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


def plan_participants(
    n: int,
    n_healthy: int,
    voxel_size: Sequence[float],
    seed: int,
    variety: bool = True,
) -> list[ParticipantSpec]:
    """Labels, healthy/lesion status and grid of each participant (deterministic for ``seed``).

    With ``variety`` participant k uses ``k % 4``: RAS; LPS; PIR with its third (left-right)
    axis 3x thicker; LAS tilted 12 deg about x and -8 deg about z (oblique).
    """
    if not 0 <= n_healthy <= n:
        raise ValueError(f"n_healthy must lie in [0, {n}], got {n_healthy}")
    rng = np.random.default_rng([seed, 104729])
    healthy = set(int(i) for i in rng.choice(n, size=n_healthy, replace=False)) if n_healthy else set()
    width = max(2, len(str(n)))
    base = tuple(float(v) for v in voxel_size)
    specs = []
    for k in range(n):
        orientation, zooms, oblique = "RAS", base, (0.0, 0.0, 0.0)
        if variety:
            kind = k % 4
            if kind == 1:
                orientation = "LPS"
            elif kind == 2:
                orientation, zooms = "PIR", (base[0], base[1], 3.0 * base[2])
            elif kind == 3:
                orientation, oblique = "LAS", (12.0, 0.0, -8.0)
        specs.append(ParticipantSpec(f"{k + 1:0{width}d}", k not in healthy, orientation, zooms, oblique))
    return specs


# ----------------------------------------------------------------------------- file writing


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes(path, data)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, text.encode())


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype) -> None:
    """A gzipped NIfTI with scanner qform/sform; gzip's mtime is 0 so bytes are reproducible."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    _atomic_write(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


# ----------------------------------------------------------------------------- synthesis


@dataclass
class _Participant:
    spec: ParticipantSpec
    grid: NativeGrid
    lesioned: np.ndarray  # int16, scanner units
    healthy: np.ndarray
    lesion: np.ndarray  # uint8
    brain: np.ndarray  # uint8
    volume_ml: float
    scale: float


def _synth_participant(spec: ParticipantSpec, index: int, seed: int, contrast: str, size, shape) -> _Participant:
    rng = np.random.default_rng([seed, index])
    v = float(min(spec.voxel_size))
    synth_shape = tuple(int(np.ceil(f / v / 2.0) * 2) for f in SYNTH_FOV_MM)
    template = load_template(GridConfig(shape=synth_shape, voxel_size=(v, v, v)))
    brain = synth_healthy(template, rng, contrast)
    mask = np.zeros(brain.image.shape, bool)
    lesioned = brain.image
    if spec.lesion:
        mask = random_lesion(brain.parenchyma, rng, size=size, voxel_size=(v, v, v))
        lesioned = encode_lesion(brain.image, mask, rng, contrast)
    pose = random_pose(rng)
    centre = pose[:3, :3] @ template_brain_centre() + pose[:3, 3] + rng.uniform(-4, 4, size=3)
    grid = native_grid(spec.orientation, spec.voxel_size, centre, NATIVE_FOV_MM, spec.oblique_deg, shape)
    src = np.asarray(template.affine)
    n_brain = to_native(brain.brain_mask.astype(np.float32), src, grid, pose) >= 0.5
    n_healthy = to_native(brain.image, src, grid, pose) * n_brain
    n_lesioned = to_native(lesioned, src, grid, pose) * n_brain if spec.lesion else n_healthy
    fraction = to_native(mask.astype(np.float32), src, grid, pose)
    visible = (np.abs(n_lesioned - n_healthy) > VISIBLE_CHANGE) & (fraction > 0)
    n_lesion = ((fraction >= LESION_FRACTION) | visible) & n_brain
    scale = float(rng.uniform(800.0, 1200.0))  # arbitrary "scanner units", like real data

    def units(a):
        return np.round(np.clip(a, 0.0, 1.0) * scale).astype(np.int16)

    return _Participant(
        spec=spec,
        grid=grid,
        lesioned=units(n_lesioned),
        healthy=units(n_healthy),
        lesion=n_lesion.astype(np.uint8),
        brain=n_brain.astype(np.uint8),
        volume_ml=lesion_volume_ml(n_lesion, spec.voxel_size),
        scale=scale,
    )


# ----------------------------------------------------------------------------- dataset files


def _readme(n: int, n_healthy: int, contrast: str, seed: int, size) -> str:
    return f"""# Synthetic lesion dataset (usb-synth-dataset)

Written by `usb-synth-dataset` (bids_usb {__version__}) with seed {seed}: {n} participants,
{n - n_healthy} with a synthetic lesion and {n_healthy} healthy, {contrast} contrast,
lesion sizes `{size}`.

Every brain is synthetic: the MNI ICBM 2009a template (shipped with nilearn) randomly
deformed (affine and elastic) and re-contrasted, with, for lesioned participants, a random
fluid-advected pseudo-lesion drawn in (USB/UNA anomaly randomization). NO real participant
data are included.

- Images are skull-stripped-looking: zero outside the brain (the template has no skull).
- Each participant is on its own scanner-like grid, at a random head pose: orientations
  cycle through RAS, LPS, PIR (thick sagittal slices) and an oblique LAS grid.
- `sub-<label>/anat/sub-<label>_label-lesion_roi.nii.gz`: the lesion mask, on the image's grid
  (fMRIPrep's convention; listed in `.bidsignore`).
- `derivatives/{DERIVATIVES_NAME}/`: the healthy ground truth (`desc-healthy`, same grid and
  intensity units as the raw image), the lesion mask (`desc-lesion_mask`, `"Type": "Lesion"`)
  and the brain mask (`desc-brain_mask`).
- `participants.tsv` lists each participant's lesion volume, orientation and voxel size.
"""


_DERIVATIVES_README = """# usb-synth: ground truth of the synthetic lesion dataset

For every participant of the raw dataset two levels up: the healthy image before the lesion
was drawn in (`desc-healthy`, same grid and intensity units as the raw image), the lesion
mask (`desc-lesion_mask`, lesioned participants only) and the brain mask (`desc-brain_mask`).
All images are skull-stripped-looking (zero outside the brain).
"""


def _participants_json() -> dict:
    return {
        "participant_id": {"Description": "Participant label"},
        "lesion": {
            "Description": "Whether a synthetic lesion was drawn in",
            "Levels": {"yes": "lesioned", "no": "healthy"},
        },
        "lesion_volume_ml": {"Description": "Lesion volume on the participant's grid", "Units": "mL"},
        "orientation": {"Description": "Voxel axis orientation code of the T1w/FLAIR image"},
        "voxel_size": {"Description": "Voxel size of the image in mm, array-axis order (e.g. 1x1x3)"},
    }


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} is not empty; pass --overwrite to replace a dataset there")
        desc = out / "dataset_description.json"
        ours = False
        if desc.is_file():
            try:
                gen = json.loads(desc.read_text()).get("GeneratedBy", [])
                ours = any(g.get("Name") == GENERATOR for g in gen)
            except (ValueError, AttributeError):
                ours = False
        if ours:  # remove what an earlier run wrote, so no stale participant survives
            for path in sorted(out.glob("sub-*")):
                shutil.rmtree(path)
            shutil.rmtree(out / "derivatives" / DERIVATIVES_NAME, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_dataset(
    out: str | Path,
    participants: int = 4,
    seed: int = 0,
    n_healthy: int | None = None,
    healthy_fraction: float = 0.25,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    grid: Sequence[int] | None = None,
    contrast: str = "T1w",
    lesion_size="stroke",
    variety: bool = True,
    overwrite: bool = False,
) -> list[dict]:
    """Write the synthetic BIDS dataset to ``out``; returns one record per participant."""
    out = Path(out)
    if participants < 1:
        raise ValueError("participants must be at least 1")
    if contrast not in ("T1w", "FLAIR"):
        raise ValueError(f"contrast must be 'T1w' or 'FLAIR', got {contrast!r}")
    if n_healthy is None:
        n_healthy = int(round(participants * healthy_fraction))
    zooms = tuple(float(v) for v in voxel_size)
    if len(zooms) == 1:
        zooms = zooms * 3
    specs = plan_participants(participants, n_healthy, zooms, seed, variety)
    _prepare_output(out, overwrite)
    deriv = out / "derivatives" / DERIVATIVES_NAME
    generated_by = [{"Name": GENERATOR, "Version": __version__}]
    records = []
    for index, spec in enumerate(specs):
        p = _synth_participant(spec, index, seed, contrast, lesion_size, grid)
        sub = f"sub-{spec.label}"
        raw_name = f"{sub}_{contrast}.nii.gz"
        raw_rel = f"{sub}/anat/{raw_name}"
        common = {
            "SkullStripped": True,
            "SyntheticData": True,
            "Description": "Synthetic brain (deformed MNI template), skull-stripped-looking.",
        }
        _write_nifti(out / raw_rel, p.lesioned, p.grid.affine, np.int16)
        _write_json(out / sub / "anat" / f"{sub}_{contrast}.json", common)
        if spec.lesion:
            _write_nifti(out / sub / "anat" / f"{sub}_label-lesion_roi.nii.gz", p.lesion, p.grid.affine, np.uint8)
        sources = [f"bids:raw:{raw_rel}"]
        on_grid = {"Sources": sources, "SpatialReference": f"bids:raw:{raw_rel}"}
        _write_nifti(deriv / sub / "anat" / f"{sub}_desc-healthy_{contrast}.nii.gz", p.healthy, p.grid.affine, np.int16)
        _write_json(
            deriv / sub / "anat" / f"{sub}_desc-healthy_{contrast}.json",
            {
                "SkullStripped": True,
                "Sources": sources,
                "Description": "Healthy ground truth: the raw image before the lesion was drawn in.",
                "IntensityScale": round(p.scale, 4),
            },
        )
        if spec.lesion:
            _write_nifti(deriv / sub / "anat" / f"{sub}_desc-lesion_mask.nii.gz", p.lesion, p.grid.affine, np.uint8)
            _write_json(
                deriv / sub / "anat" / f"{sub}_desc-lesion_mask.json",
                {"Type": "Lesion", **on_grid, "Description": "Synthetic lesion drawn into the raw image."},
            )
        _write_nifti(deriv / sub / "anat" / f"{sub}_desc-brain_mask.nii.gz", p.brain, p.grid.affine, np.uint8)
        _write_json(
            deriv / sub / "anat" / f"{sub}_desc-brain_mask.json",
            {"Type": "Brain", **on_grid, "Description": "Brain of the synthetic image (nonzero region)."},
        )
        records.append(
            {
                "participant_id": sub,
                "lesion": "yes" if spec.lesion else "no",
                "lesion_volume_ml": round(p.volume_ml, 3),
                "orientation": spec.orientation + (" (oblique)" if any(spec.oblique_deg) else ""),
                "voxel_size": "x".join(f"{z:g}" for z in spec.voxel_size),
                "shape": p.grid.shape,
            }
        )
    columns = ["participant_id", "lesion", "lesion_volume_ml", "orientation", "voxel_size"]
    rows = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in records]
    _write_text(out / "participants.tsv", "\n".join(rows) + "\n")
    _write_json(out / "participants.json", _participants_json())
    _write_text(out / ".bidsignore", "*_roi.nii.gz\n")
    _write_text(out / "README.md", _readme(participants, n_healthy, contrast, seed, lesion_size))
    _write_text(deriv / "README.md", _DERIVATIVES_README)
    _write_json(
        deriv / "dataset_description.json",
        {
            "Name": "USB synthetic lesion dataset: healthy ground truth and masks",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": generated_by,
            "SourceDatasets": [{"URL": "../../"}],
            "DatasetLinks": {"raw": "../../"},
        },
    )
    _write_json(
        out / "dataset_description.json",
        {
            "Name": "USB synthetic lesion dataset",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["bids_usb developers"],
            "GeneratedBy": generated_by,
            "SourceDatasets": [
                {
                    "URL": "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009",
                    "Version": "ICBM 2009a nonlinear symmetric, as shipped with nilearn",
                }
            ],
        },
    )
    return records


# ----------------------------------------------------------------------------- command line


class _Triple(click.ParamType):
    """One number or three (``2``, ``1,1,3`` or ``1x1x3``)."""

    name = "N[,N,N]"

    def __init__(self, kind):
        self.kind = kind

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return tuple(self.kind(v) for v in value)
        parts = str(value).replace("x", ",").split(",")
        try:
            nums = tuple(self.kind(p) for p in parts if p.strip())
        except ValueError:
            self.fail(f"{value!r} is not one or three numbers", param, ctx)
        if len(nums) == 1:
            nums = nums * 3
        if len(nums) != 3 or min(nums) <= 0:
            self.fail(f"{value!r}: expected one or three positive numbers", param, ctx)
        return nums


def _size_option(value: str):
    if value in SIZE_PRESETS_ML:
        return value
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"use a preset ({', '.join(SIZE_PRESETS_ML)}) or LO,HI in mL") from None
    if not 0 < lo <= hi:
        raise click.BadParameter("LO,HI must satisfy 0 < LO <= HI")
    return (lo, hi)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--participants", type=click.IntRange(min=1), default=4, show_default=True, help="Number of participants."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (same seed, same bytes)."
)
@click.option(
    "--n-healthy",
    type=click.IntRange(min=0),
    default=None,
    help="Number of healthy participants (overrides --healthy-fraction).",
)
@click.option(
    "--healthy-fraction",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Share of healthy participants.",
)
@click.option(
    "--voxel-size",
    type=_Triple(float),
    default="1",
    show_default=True,
    help="Native voxel size in mm: one number or three (e.g. 1,1,1.2).",
)
@click.option(
    "--grid",
    type=_Triple(int),
    default=None,
    help="Native grid shape (array axes); default: a 200x248x216 mm field of view.",
)
@click.option("--contrast", type=click.Choice(["T1w", "FLAIR"]), default="T1w", show_default=True)
@click.option(
    "--lesion-size",
    default="stroke",
    show_default=True,
    help=f"Lesion volume distribution: {', '.join(SIZE_PRESETS_ML)} or LO,HI (mL, log-uniform).",
)
@click.option(
    "--variety/--no-variety",
    default=True,
    show_default=True,
    help="Cycle orientations (RAS, LPS, PIR thick-slice, oblique LAS), or all RAS.",
)
@click.option(
    "--overwrite", is_flag=True, help="Write into a non-empty OUT (an earlier usb-synth-dataset run there is replaced)."
)
def main(
    out, participants, seed, n_healthy, healthy_fraction, voxel_size, grid, contrast, lesion_size, variety, overwrite
):
    """Write a synthetic BIDS dataset with lesions and healthy ground truth to OUT."""
    if n_healthy is not None and n_healthy > participants:
        raise click.BadParameter(f"cannot exceed --participants ({participants})", param_hint="--n-healthy")
    records = write_dataset(
        out,
        participants=participants,
        seed=seed,
        n_healthy=n_healthy,
        healthy_fraction=healthy_fraction,
        voxel_size=voxel_size,
        grid=grid,
        contrast=contrast,
        lesion_size=_size_option(lesion_size),
        variety=variety,
        overwrite=overwrite,
    )
    for r in records:
        click.echo(
            f"{r['participant_id']}: lesion={r['lesion']} ({r['lesion_volume_ml']} mL), "
            f"{r['orientation']}, {r['voxel_size']} mm, grid {r['shape']}"
        )
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
