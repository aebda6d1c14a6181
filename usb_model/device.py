"""Where the networks run, and in which precision.

CUDA when present, else the CPU. On CUDA the networks run under bf16 autocast (the diffusion
arithmetic stays float32); on the CPU everything is float32, because CPU bf16 is slower on most
machines and changes results.
"""

from __future__ import annotations

import contextlib

import torch


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA if available else CPU; anything else is taken as given."""
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but CUDA is not available; use --device cpu")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def statistics_autocast(device: torch.device):
    """The precision of a pass whose output only feeds statistics (the whole-grid decode that
    gives cropped decodes their GroupNorm statistics and the intensity line): bf16 on CUDA, and on
    a CPU with native bf16 (AVX512-BF16 or AMX, where oneDNN runs it 1.8x faster than float32 on
    the paper's decoder: docs/ae-passes.md); float32 elsewhere. The statistics themselves are
    accumulated in float32 (usb_model.passes.GroupNormStatistics), and no voxel of such a pass
    reaches an output."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN's probe
        return False


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on the device itself, so noise for a seed does not depend on host transfers."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
