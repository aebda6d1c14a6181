"""Reading the authors' pickled weight files without running anything in them.

The authors publish their denoisers as ``torch.save``d lists (``.pth``) and their autoencoder as
a PyTorch Lightning checkpoint (``.ckpt``). Both are pickles, and unpickling a file from the
internet normally runs whatever callables it names. Here:

- ``.pth`` goes through ``torch.load(..., weights_only=True)``: torch's own restricted loader,
  which accepts tensors and plain containers only.
- ``.ckpt`` cannot: its ``hyper_parameters`` hold omegaconf objects, which weights-only refuses.
  ``RestrictedUnpickler`` reads it instead. Tensors are rebuilt from the zip archive's storage
  records (torch's zip format: ``<name>/data.pkl`` names each storage by a persistent id
  ``('storage', <dtype storage class>, key, location, numel)``, whose bytes are the member
  ``<name>/data/<key>``); plain containers are the builtins; every other class the pickle
  names becomes an inert stand-in: a fresh class that is never imported, whose construction
  only records its arguments. So neither omegaconf nor Lightning is needed, and nothing in the
  file can run.

Everything unexpected ends in one ``UpstreamError`` whose message names the file and the tensor.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError

__all__ = ["UpstreamError", "StandIn", "read_pth_state_dict", "read_lightning_state_dict", "restricted_load"]


class UpstreamError(CheckpointError):
    """An upstream weight file that cannot be used; the message names the file and the tensor."""


# The legacy typed-storage classes torch.save writes into the pickle, and their element types.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Plain containers and scalars: constructing them from pickled arguments runs nothing foreign.
CONTAINERS = {
    ("collections", "OrderedDict"): OrderedDict,
    **{
        (mod, name): kind
        for mod in ("builtins", "__builtin__")
        for name, kind in {
            "dict": dict,
            "list": list,
            "tuple": tuple,
            "set": set,
            "frozenset": frozenset,
            "int": int,
            "long": int,
            "float": float,
            "str": str,
            "bool": bool,
        }.items()
    },
}


class StandIn:
    """What any class the loader does not know becomes: its name and what the pickle handed it.

    Subclassed per pickled name (``stand_in``) so that the object still says what it stood
    for. It accepts any construction, state, items and appends, and does nothing with them.
    """

    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.elements = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, key, value) -> None:
        self.items[key] = value

    def append(self, value) -> None:
        self.elements.append(value)

    def extend(self, values) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<stand-in for {self.pickled_name}>"


_STAND_INS: dict[str, type] = {}


def stand_in(module: str, name: str) -> type:
    """The inert stand-in class for ``module.name`` (one per name; nothing is imported)."""
    key = f"{module}.{name}"
    if key not in _STAND_INS:
        _STAND_INS[key] = type("StandIn", (StandIn,), {"pickled_name": key, "__module__": __name__})
    return _STAND_INS[key]


@dataclass(frozen=True)
class StorageType:
    """A pickled storage class (``torch.FloatStorage``), reduced to its element type."""

    dtype: torch.dtype


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it; materialised (and checked) once its name is known."""

    storage: Any
    offset: Any
    size: Any
    stride: Any

    def materialise(self, source: str, name: str) -> torch.Tensor:
        if not isinstance(self.storage, torch.Tensor):
            raise UpstreamError(f"{source}: tensor {name!r} has no storage in the archive")
        try:
            size, stride = tuple(int(s) for s in self.size), tuple(int(s) for s in self.stride)
            return torch.as_strided(self.storage, size, stride, int(self.offset)).clone()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise UpstreamError(f"{source}: tensor {name!r} does not fit its storage ({_first_line(exc)})") from exc


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> TensorRef:
    # torch._utils._rebuild_tensor / _rebuild_tensor_v2: (storage, offset, size, stride,
    # requires_grad, backward_hooks[, metadata]); gradients and hooks mean nothing here.
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data  # a Parameter's data is the tensor


REBUILDERS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds tensors and containers and turns everything else inert."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in REBUILDERS:
            return REBUILDERS[(module, name)]
        if (module, name) in CONTAINERS:
            return CONTAINERS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        return stand_in(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UpstreamError(f"{self.source}: unknown persistent record {pid!r:.80}; not a torch zip checkpoint")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, StorageType):
            raise UpstreamError(f"{self.source}: storage {key!r} has an unsupported element type {kind!r:.60}")
        key = str(key)
        if key not in self.storages:
            member = f"{self.prefix}data/{key}"
            try:
                raw = self.archive.read(member)
            except KeyError as exc:
                raise UpstreamError(f"{self.source}: storage {key!r} is missing from the archive ({member})") from exc
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if not isinstance(numel, int) or len(raw) != numel * itemsize:
                raise UpstreamError(
                    f"{self.source}: storage {key!r} holds {len(raw)} bytes, its record says {numel} x {itemsize}"
                )
            empty = torch.empty(0, dtype=kind.dtype)
            self.storages[key] = torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw else empty
        return self.storages[key]


def restricted_load(path: str | Path) -> Any:
    """The object a torch zip file holds, tensors as ``TensorRef``, unknown classes as stand-ins."""
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UpstreamError(f"{source}: not a PyTorch zip checkpoint ({_first_line(exc)})") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise UpstreamError(f"{source}: not a PyTorch zip checkpoint (expected one data.pkl, found {len(pickles)})")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise UpstreamError(f"{source}: tensors are stored big-endian; re-save the file on a little-endian machine")
        unpickler = RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, source)
        try:
            return unpickler.load()
        except UpstreamError:
            raise
        except Exception as exc:  # a malformed pickle can fail in many ways; none may escape unexplained
            raise UpstreamError(f"{source}: cannot read the pickle ({type(exc).__name__}: {_first_line(exc)})") from exc


def read_lightning_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``checkpoint['state_dict']`` of a Lightning ``.ckpt``, read with ``RestrictedUnpickler``."""
    obj = restricted_load(path)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UpstreamError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry)")
    state = obj["state_dict"]
    if not isinstance(state, dict):
        raise UpstreamError(f"{path}: 'state_dict' is a {type(state).__name__}, not a dictionary of tensors")
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, TensorRef):
            raise UpstreamError(f"{path}: entry {name!r} of 'state_dict' is not a tensor ({value!r:.60})")
        tensors[str(name)] = value.materialise(str(path), str(name))
    return tensors


def read_pth_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of the authors' ``.pth``: item 0 of a saved list (their training script's
    layout), or the dict itself; read with torch's weights-only loader."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UpstreamError(f"{path}: no such file") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
        raise UpstreamError(f"{path}: refused by torch's weights-only loader ({_refusal(exc)})") from exc
    state = obj[0] if isinstance(obj, (list, tuple)) and obj else obj
    if not isinstance(state, dict):
        raise UpstreamError(
            f"{path}: expected a state dict (or a list whose item 0 is one), found {type(state).__name__}"
        )
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UpstreamError(f"{path}: entry {name!r} is not a tensor ({type(value).__name__})")
    return {str(k): v for k, v in state.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal(exc: BaseException) -> str:
    """The informative line of torch's (long, multi-line) weights-only refusal."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:  # which callable the file asked for
            return line.rstrip(".")
    return lines[0] if lines else type(exc).__name__
