"""Cached latents: the denoisers train on training triplets encoded once, not on every step.

On a CPU the denoiser stages spend a large share of every step synthesising a triplet and
running the frozen encoder on its image and mask (benchmarks/results/compute-plan.json). The
autoencoder does not change during those stages, so the latents of a fixed set of triplets,
and of their left-right mirror images (the synthesis is symmetric, the encoder is not exactly
equivariant, so the mirrors are encoded, not flipped latents), are computed once per
autoencoder and reused. The noise and the timestep still change every step, so the denoisers
see a fresh noisy input every time; the size of the set bounds how much anatomy they see.

The cache lives beside the training state (``latents/``) and carries the fingerprint of the
autoencoder and latent scale it was made with; any other autoencoder rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..checkpoint import atomic_directory
from .data import chunks, collate_triplets, first_items

KEYS = ("healthy", "lesioned", "mask")
CACHE_FORMAT = "usb-latent-cache/1"
LEFT_RIGHT = 1  # the first spatial axis of a (C, X, Y, Z) volume on the RAS model grid


def autoencoder_fingerprint(networks) -> str:
    """sha256 over the autoencoder's tensors and the latent scale: what the latents depend on."""
    digest = hashlib.sha256()
    for name, tensor in sorted(networks.autoencoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(repr(float(networks.latent_scale)).encode())
    return digest.hexdigest()


class LatentDataset(Dataset):
    """Map-style dataset of cached latents, items shaped like triplets: {key: (C, *latent)}."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(tensors[k]) for k in KEYS}
        if len(lengths) != 1:
            raise ValueError(f"cached latents of unequal counts: {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["mask"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: self.tensors[k][index].float() for k in KEYS}


@torch.no_grad()
def encode_triplets(
    networks, dataset: Any, count: int, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Scaled posterior means of the first ``count`` triplets and of their mirror images, in
    float16 on the CPU (half the memory; latents have unit std, far from float16's limits)."""
    networks.autoencoder.eval()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
    for chunk in chunks(first_items(dataset, count, 0, 1), batch_size):
        batch = collate_triplets(chunk)
        for mirrored in (False, True):
            for key in KEYS:
                volume = batch[key].flip(LEFT_RIGHT + 1) if mirrored else batch[key]
                out[key].append(networks.encode(volume.to(device)).to("cpu", torch.float16))
    return {k: torch.cat(v) for k, v in out.items()}


def load_or_build(
    directory: str | Path, networks, dataset: Any, count: int, batch_size: int, device: torch.device
) -> tuple[LatentDataset, bool]:
    """The cache in ``directory`` when it matches this autoencoder and count, else a new one
    (written atomically). Returns (dataset, built)."""
    directory = Path(directory)
    fingerprint = autoencoder_fingerprint(networks)
    meta_path = directory / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta == _meta(fingerprint, count):
            return LatentDataset(load_file(str(directory / "latents.safetensors"))), False
    tensors = encode_triplets(networks, dataset, count, batch_size, device)

    def write(tmp: Path) -> None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "latents.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(_meta(fingerprint, count)))

    atomic_directory(directory, write)
    return LatentDataset(tensors), True


def _meta(fingerprint: str, count: int) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "autoencoder": fingerprint, "triplets": count, "mirrored": True}
