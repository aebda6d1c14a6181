"""Checkpoints: safetensors weights plus JSON, so that loading a model never unpickles.

A checkpoint is a directory::

    config.json          the USBConfig the networks were built from
    model.safetensors    every tensor of USBNetworks (autoencoder.*, lesion.*, brain.*, latent_scale)
    meta.json            package version, latent scale, training-data description, free notes,
                         and ``grid_affine``: the model grid's voxel-to-world (RAS mm) matrix
    template.safetensors the template the model was trained in (``t1w``, ``brain_mask``) on the
                         model grid: what the BIDS App registers participants to

Nested states that are not plain ``state_dict``s (optimizers, schedulers, counters) go through
``save_state``/``load_state``: tensors into safetensors, everything else into JSON.
Directories are written under a temporary name and renamed, so a checkpoint appears whole or
not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .config import USBConfig
from .networks import USBNetworks

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
TEMPLATE_FILE = "template.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not fit its configuration."""


def save_checkpoint(
    networks: USBNetworks,
    directory: str | Path,
    *,
    training_data: dict[str, Any] | None = None,
    notes: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a checkpoint directory atomically.

    ``template``: ``{"t1w": array, "brain_mask": array, "affine": 4x4}`` on the model grid;
    a checkpoint without one can sample but cannot serve the BIDS App.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"checkpoint directory {directory} exists; pass overwrite=True to replace it")
    meta = {
        "format": "usb-checkpoint/1",
        "package_version": __version__,
        "latent_scale": float(networks.latent_scale),
        "contrast": networks.cfg.grid.contrast,
        "empty_condition": networks.cfg.training.empty_condition,
        "training_data": training_data or {},
        "notes": notes or {},
    }
    if template is not None:
        meta["grid_affine"] = [[float(v) for v in row] for row in template["affine"]]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in networks.state_dict().items()}

    def write(tmp: Path) -> None:
        networks.cfg.to_json(tmp / CONFIG_FILE)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"package_version": __version__})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if template is not None:
            arrays = {k: torch.tensor(np.asarray(template[k], dtype=np.float32)) for k in ("t1w", "brain_mask")}
            save_file(arrays, str(tmp / TEMPLATE_FILE))

    atomic_directory(directory, write)
    return directory


def checkpoint_directory(path: str | Path) -> Path:
    """The checkpoint a path names: the path itself, or the ``checkpoint/`` that ``usb-train``
    and the group level's training leave inside their output directory, so that users may pass
    either."""
    path = Path(path)
    return path / "checkpoint" if (path / "checkpoint" / CONFIG_FILE).is_file() else path


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> USBNetworks:
    """Build the networks from ``config.json`` and fill them from ``model.safetensors``.

    Every failure is a ``CheckpointError`` whose message names the file or the tensor.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist or is not a directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"checkpoint {directory} has no {name}; it is incomplete, save it again")
    try:
        cfg = USBConfig.from_json(directory / CONFIG_FILE)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid USB config: {exc}") from exc
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is not a readable safetensors file: {exc}") from exc
    networks = USBNetworks(cfg)
    load_weights(networks, tensors, source=directory / WEIGHTS_FILE)
    return networks.to(device).eval()


def check_weights(directory: str | Path) -> None:
    """Check ``model.safetensors`` against its config without loading it: every tensor present,
    none extra, each of the shape the config builds (the networks are built on the meta device,
    so this costs milliseconds even for the paper-size model). A truncated file fails here too:
    safetensors checks that the header's offsets cover the whole file."""
    directory = Path(directory)
    try:
        cfg = USBConfig.from_json(directory / CONFIG_FILE)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid USB config: {exc}") from exc
    try:
        with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as fh:
            shapes = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / WEIGHTS_FILE} is not a readable safetensors file: {exc}") from exc
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in USBNetworks(cfg).state_dict().items()}
    _compare(expected, shapes, directory / WEIGHTS_FILE)


def _compare(expected: dict[str, tuple], found: dict[str, tuple], source: str | Path) -> None:
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(
            f"{source} lacks tensor {missing[0]!r} ({len(missing)} missing); the file does not match its config"
        )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source} has unexpected tensor {unexpected[0]!r}; the file does not match its config")
    for key, shape in expected.items():
        if found[key] != shape:
            raise CheckpointError(f"{source}: tensor {key!r} has shape {found[key]}, the config expects {shape}")


def load_weights(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str | Path = "weights") -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    _compare(expected, {k: tuple(v.shape) for k, v in tensors.items()}, source)
    module.load_state_dict(tensors, strict=True)


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_template_arrays(directory: str | Path) -> dict[str, Any]:
    """The template stored with a checkpoint: ``t1w`` and ``brain_mask`` arrays and ``affine``."""
    directory = Path(directory)
    meta = read_meta(directory)
    if not (directory / TEMPLATE_FILE).is_file() or "grid_affine" not in meta:
        raise CheckpointError(
            f"checkpoint {directory} carries no template ({TEMPLATE_FILE} and grid_affine); save it with template=..."
        )
    try:
        arrays = load_file(str(directory / TEMPLATE_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory / TEMPLATE_FILE} is not a readable safetensors file: {exc}") from exc
    out: dict[str, Any] = {k: v.numpy() for k, v in arrays.items()}
    out["affine"] = torch.tensor(meta["grid_affine"], dtype=torch.float64).numpy()
    return out


def checkpoint_sha256(directory: str | Path) -> str:
    """The digest of the weights file: what a derivative's sidecar cites as the model used."""
    digest = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- nested training states (optimizers, EMA, counters) --------------------------------------


def save_state(state: dict[str, Any], directory: str | Path, name: str = "state") -> None:
    """Write a nested dict: tensors to ``<name>.safetensors``, the rest to ``<name>.json``.

    Tensors are replaced in the JSON by ``{"__tensor__": key}`` markers, so the structure (ints,
    floats, lists, optimizer param-group settings) round-trips exactly without pickle.
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().to("cpu").contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[_key(k), walk(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]
        return obj

    skeleton = walk(state, name)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(directory: str | Path, name: str = "state") -> dict[str, Any]:
    directory = Path(directory)
    tensors = load_file(str(directory / f"{name}.safetensors"))
    skeleton = json.loads((directory / f"{name}.json").read_text())

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict) and "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if isinstance(obj, dict) and "__dict__" in obj:
            return {_unkey(k): walk(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(skeleton)


def _key(k: Any) -> Any:
    # Optimizer states are keyed by int parameter indices; JSON object keys would turn them into
    # strings, so keys are stored as [type, value] pairs.
    return ["int", k] if isinstance(k, int) else ["str", str(k)]


def _unkey(k: list) -> Any:
    return int(k[1]) if k[0] == "int" else k[1]


def atomic_directory(directory: str | Path, write) -> Path:
    """Call ``write(tmp)`` on a fresh sibling directory, then swap it into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        _share(tmp)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _share(directory: Path) -> None:
    """mkdtemp makes a 0700 directory; a checkpoint is read by other users (containers, clusters)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
