"""A paper-size USB checkpoint from random weights, made the way a user makes theirs.

Writes ``usb_lesion.pth``, ``usb_brain.pth`` and ``vae.ckpt`` in the authors' formats (the
shapes of every tensor from ``keys_paper.json`` in the upstream reference folder: the
full-size files' keys; a ``torch.save``d list holding the denoiser's DataParallel state dict, and
a Lightning-style dict with ``state_dict``), then converts them with ``usb-import-upstream``'s
own function. No download; the weights mean nothing, only their sizes and the compute they cost.

    python benchmarks/paper_model.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE = Path(
    os.environ.get("USB_UPSTREAM_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "upstream-usb")
)


def _random_state(shapes: dict[str, list[int]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Norm scales 1, biases 0, weights N(0, 1/fan_in): activations stay of order one."""
    state = {}
    for key, shape in shapes.items():
        if len(shape) == 1:
            state[key] = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def write_upstream_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    keys = json.loads((REFERENCE / "keys_paper.json").read_text())
    (_, den_keys), (_, vae_keys) = keys.items()
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"lesion": folder / "usb_lesion.pth", "brain": folder / "usb_brain.pth", "vae": folder / "vae.ckpt"}
    for role in ("lesion", "brain"):
        torch.save([_random_state(den_keys, gen)], paths[role])
    torch.save({"state_dict": _random_state(vae_keys, gen), "epoch": 0, "global_step": 0}, paths["vae"])
    return paths


def build_paper_checkpoint(out_dir: Path, seed: int = 0) -> Path:
    """The converted paper-size checkpoint in ``out_dir`` (made once; reused when present)."""
    from usb_model.upstream import import_upstream

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    sources = write_upstream_files(out_dir.parent / f"{out_dir.name}-upstream-files", seed)
    return import_upstream(sources["lesion"], sources["brain"], sources["vae"], out_dir)


if __name__ == "__main__":
    print(build_paper_checkpoint(Path(sys.argv[1])))
