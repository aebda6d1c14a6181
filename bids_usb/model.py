"""Finding and opening the USB checkpoint a run uses, with errors a user can act on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import bids_usb_resources
import nibabel as nib
import numpy as np

from usb_model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_weights,
    checkpoint_directory,
    checkpoint_sha256,
    load_checkpoint,
    load_template_arrays,
    read_meta,
)
from usb_model.config import USBConfig
from usb_model.template import TemplateSource, grid_nifti, resolve_source

from .errors import DataError, NoInput

BUNDLED_MODELS = bids_usb_resources.MODELS
DEFAULT_MODEL_NAME = "demo"
# The template space every checkpoint of this project lives in (MNI ICBM 2009a sym; which copy,
# nilearn's or TemplateFlow's, its config's grid.template_source says: usb_model.template).
TEMPLATE_SPACE = "MNI152NLin2009aSym"


def default_model_dir() -> Path:
    return BUNDLED_MODELS / DEFAULT_MODEL_NAME


@dataclass
class ModelBundle:
    """A checkpoint directory, checked on open: config, weights digest and its template."""

    path: Path

    @classmethod
    def open(cls, path: str | Path | None) -> ModelBundle:
        # Absolute: the workflow's nodes run in folders of their own.
        path = checkpoint_directory(Path(path).expanduser().absolute() if path is not None else default_model_dir())
        if not path.is_dir():
            if path == default_model_dir():
                raise NoInput(
                    f"no bundled model at {path}: this installation has no trained demo model yet; pass --model DIR with a USB checkpoint"
                )
            raise NoInput(
                f"--model {path}: no such directory; pass the directory that holds {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise NoInput(f"--model {path}: {name} is missing; this is not a complete USB checkpoint")
        bundle = cls(path)
        try:
            bundle.config  # noqa: B018 - parse now, fail early
            check_weights(path)  # header and shapes only: nothing is loaded, nothing unpickled
            bundle.template  # noqa: B018 - read now, fail early
        except CheckpointError as exc:
            raise DataError(f"--model {path}: {exc}") from exc
        return bundle

    @cached_property
    def config(self) -> USBConfig:
        try:
            return USBConfig.from_json(self.path / CONFIG_FILE)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.path / CONFIG_FILE} is not a valid USB config: {exc}") from exc

    @cached_property
    def meta(self) -> dict:
        return read_meta(self.path)

    @property
    def name(self) -> str:
        """The model's name for sidecars: its folder, or the training folder around ``checkpoint``."""
        return self.path.parent.name if self.path.name == "checkpoint" else self.path.name

    @property
    def contrast(self) -> str:
        return self.config.grid.contrast

    @cached_property
    def sha256(self) -> str:
        return checkpoint_sha256(self.path)

    @cached_property
    def fingerprint(self) -> str:
        """The weights' digest and the config's: what a node's result depends on. nipype hashes a
        directory input by its path only, so a model changed in place (new weights, or only a
        new ``detect_threshold`` in its config) would otherwise be served from the work directory."""
        digest = hashlib.sha256(self.sha256.encode())
        digest.update((self.path / CONFIG_FILE).read_bytes())
        return digest.hexdigest()

    @cached_property
    def template(self) -> dict:
        return load_template_arrays(self.path)

    @property
    def template_source(self) -> str:
        """The copy of the template this model was trained with and carries on its grid
        (``grid.template_source``; a checkpoint without the field: ``"nilearn"``)."""
        return self.config.grid.template_source

    @cached_property
    def graft_source(self) -> TemplateSource:
        """Where this run reads the 1 mm template a graft fill copies from: the model's own copy,
        found offline, or nilearn's with one log line when TemplateFlow's files are not there."""
        return resolve_source(self.template_source, fallback=True)

    def template_record(self) -> dict:
        """The ``Template`` entry of the sidecars' ``USB.Model``: the model's copy and the graft's."""
        return {
            **self.graft_source.record(),
            "Checkpoint": "TemplateFlow" if self.template_source == "templateflow" else "nilearn",
        }

    def template_image(self) -> nib.Nifti1Image:
        return grid_nifti(self.template["t1w"], self.template["affine"])

    def template_mask(self) -> nib.Nifti1Image:
        return grid_nifti(np.asarray(self.template["brain_mask"]) > 0.5, self.template["affine"], np.uint8)

    def load_networks(self, device="cpu"):
        try:
            return load_checkpoint(self.path, device=device)
        except CheckpointError as exc:
            raise DataError(f"--model {self.path}: {exc}") from exc

    @property
    def res_label(self) -> str:
        """The ``res-`` entity of model-grid outputs, e.g. ``2p5mm`` for 2.5 mm voxels."""
        size = self.config.grid.voxel_size[0]
        return (f"{size:g}".replace(".", "p")) + "mm"
