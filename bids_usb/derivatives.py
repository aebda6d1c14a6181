"""BIDS-Derivatives file names, sidecars and the dataset description, written atomically.

Every file is written to a temporary name in its final directory and renamed into place, so a
killed run leaves either the whole file or nothing (never a truncated NIfTI that a later tool
would read as valid).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib

from usb_model import __version__, atomic
from usb_model.atomic import atomic_write

# The order of entities in a BIDS file name (BIDS schema, rules/entities), for those that can
# occur on anatomical derivatives.
ENTITY_ORDER = [
    ("subject", "sub"), ("session", "ses"), ("acquisition", "acq"), ("ceagent", "ce"),
    ("reconstruction", "rec"), ("run", "run"), ("echo", "echo"), ("part", "part"),
    ("from", "from"), ("to", "to"), ("mode", "mode"),
    ("space", "space"), ("resolution", "res"), ("label", "label"), ("desc", "desc"),
]
SOURCE_ENTITIES = {"subject", "session", "acquisition", "ceagent", "reconstruction", "run", "echo", "part"}
CODE_URL = "https://github.com/bids-usb/bids_usb"


def bids_name(entities: dict[str, Any], suffix: str, extension: str) -> str:
    parts = [f"{short}-{entities[long]}" for long, short in ENTITY_ORDER if entities.get(long) not in (None, "")]
    return "_".join([*parts, suffix]) + extension


def derivative_path(output_dir: Path, source: dict[str, Any], suffix: str, extension: str = ".nii.gz", **new: Any) -> Path:
    """The path of a derivative of ``source`` (the input's entities), with new entities added."""
    entities = {k: v for k, v in source.items() if k in SOURCE_ENTITIES}
    entities.update(new)
    folder = Path(output_dir) / f"sub-{entities['subject']}"
    if entities.get("session"):
        folder = folder / f"ses-{entities['session']}"
    return folder / "anat" / bids_name(entities, suffix, extension)


def write_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    return atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def write_json(data: dict[str, Any], path: Path) -> Path:
    return write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", path)


def write_text(text: str, path: Path) -> Path:
    return atomic.write_text(path, text)


def bids_uri(dataset: str, bids_dir: Path, path: Path) -> str:
    """``bids:<dataset>:<relative path>``, the BIDS URI form for ``Sources``."""
    return f"bids:{dataset}:{Path(path).resolve().relative_to(Path(bids_dir).resolve()).as_posix()}"


def dataset_description(bids_dir: Path, container: dict[str, str] | None = None) -> dict[str, Any]:
    generated = {"Name": "bids_usb", "Version": __version__, "CodeURL": CODE_URL}
    if container:
        generated["Container"] = container
    raw_name = None
    try:
        raw_name = json.loads((Path(bids_dir) / "dataset_description.json").read_text()).get("Name")
    except (OSError, ValueError):
        pass
    source = {"URL": Path(bids_dir).resolve().as_uri()}
    return {
        "Name": f"bids_usb derivatives{f' of {raw_name}' if raw_name else ''}",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": Path(bids_dir).resolve().as_uri()},
    }


BIDSIGNORE = "\n".join(["*.html", "**/figures", "*_xfm.mat", "logs/", ""])


def init_dataset(output_dir: Path, bids_dir: Path) -> None:
    """dataset_description.json and .bidsignore; an existing description is kept as it is
    (another run's, or another participant's running in parallel)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    container = None
    if os.environ.get("BIDS_USB_CONTAINER"):
        container = {"Type": os.environ["BIDS_USB_CONTAINER"], "Tag": f"bids_usb:{__version__}"}
    if not (output_dir / "dataset_description.json").exists():
        write_json(dataset_description(bids_dir, container), output_dir / "dataset_description.json")
    if not (output_dir / ".bidsignore").exists():
        write_text(BIDSIGNORE, output_dir / ".bidsignore")
