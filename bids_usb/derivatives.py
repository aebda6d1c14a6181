"""BIDS-Derivatives file names, sidecars and the dataset description, written atomically.

Every file is written to a temporary name in its final directory and renamed into place, so a
killed run leaves either the whole file or nothing (never a truncated NIfTI that a later tool
would read as valid).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import nibabel as nib

from usb_model import __version__, atomic
from usb_model.atomic import atomic_write
from usb_model.bids import BIDS_VERSION

# Entities that describe a derivative rather than the acquisition it came from: a derivative's
# name gets its own values for these; every other entity of the source is carried over, so that
# two inputs differing in any entity (task-, chunk-, inv-, ...) never write the same file.
DERIVATIVE_ENTITIES = {"space", "res", "den", "label", "desc", "atlas", "seg", "hemi", "roi", "from", "to", "mode"}
CODE_URL = "https://github.com/bids-usb/bids_usb"


@functools.cache
def short_names() -> dict[str, str]:
    """pybids' entity names (``acquisition``, ``desc``, ...) -> the keys files carry (``acq``),
    read from pybids' own ``bids`` and ``derivatives`` configurations."""
    from bids.layout import Config

    names = {}
    for config in ("bids", "derivatives"):
        for name, entity in Config.load(config).entities.items():
            match = re.search(r"([a-zA-Z]+)-\(", entity.pattern or "")
            if match:
                names[name] = match.group(1)
    names.update({"resolution": "res", "density": "den", "description": "desc"})  # the schema's long names
    return names


@functools.cache
def entity_order() -> list[str]:
    """File-name keys in the BIDS schema's order (``rules.entities``); the transform entities
    ``from``/``to``/``mode`` (BIDS-Derivatives, as fMRIPrep writes them) go before ``space``."""
    from bidsschematools.schema import load_schema

    schema = load_schema()
    order = [schema.objects.entities[key]["name"] for key in schema.rules.entities]
    at = order.index("space")
    return order[:at] + ["from", "to", "mode"] + order[at:]


def parse_entities(path: str | os.PathLike) -> dict[str, Any]:
    """A file name's entities, suffix and extension, as pybids parses them (raw and derivative
    entities alike): the one way this package reads BIDS names."""
    from bids.layout import parse_file_entities

    return parse_file_entities(str(path), config=["bids", "derivatives"])


def bids_name(entities: dict[str, Any], suffix: str, extension: str) -> str:
    """``sub-01_ses-a_..._<suffix><extension>`` from pybids-style (long) or short entity names."""
    names = short_names()
    by_key = {names.get(k, k): v for k, v in entities.items() if v not in (None, "")}
    unknown = sorted(set(by_key) - set(entity_order()))
    if unknown:
        raise ValueError(f"no BIDS entity {unknown[0]!r}; known: {', '.join(entity_order())}")
    parts = [f"{key}-{by_key[key]}" for key in entity_order() if key in by_key]
    return "_".join([*parts, suffix]) + extension


def derivative_path(
    output_dir: Path, source: dict[str, Any], suffix: str, extension: str = ".nii.gz", **new: Any
) -> Path:
    """The path of a derivative of ``source`` (the input's pybids entities), with new entities added."""
    names = short_names()
    keys = set(entity_order()) - DERIVATIVE_ENTITIES
    carried = {k: v for k, v in source.items() if names.get(k) in keys}
    entities = {**carried, **new}
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
    """``bids:<dataset>:<relative path>``, the BIDS URI form for ``Sources``: the path the dataset
    names, never a symlink's target (DataLad's ``.git/annex/objects``, a shared store)."""
    from .storage import dataset_path

    return f"bids:{dataset}:{dataset_path(bids_dir, path)}"


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
        "BIDSVersion": BIDS_VERSION,
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
