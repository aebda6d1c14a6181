"""Autoencoder passes over part of the grid: a box, cut into tiles that fit a memory budget.

The output of a mask-aware healing takes the model's result only inside the edit region (the
lesion and its blend band); everywhere else the input's own voxels are kept. So the decoder
need not run over the whole volume: it runs over the edit region's bounding box, grown by a
margin of context (the decoder's reach), and only the box's core is kept. The same holds for
the encoder and the filled image, which differs from the input only inside the lesion.

A cropped pass is not bit-equal to a full one: MONAI's ``AutoencoderKL`` normalises with
GroupNorm, whose statistics span the volume it is given, and the convolutions near the crop's
faces see zero padding instead of the brain. The margin keeps the faces away from the core;
the statistics are what they are (benchmarks/participant.py measures the difference, and
``tests/test_passes.py`` bounds it on a tiny model).

Tiles: a box too large for the budget is cut into cores that partition it; each core is run
grown by the margin and only its core is kept (overlap, then discard: no blending of two
approximations). A box that fits, and a margin that reaches the grid's faces, is one plain
pass: the full-volume path, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .costs import CostLog, NoCosts

# Image-space context around a cropped box, in latent voxels (times the downsampling factor in
# image voxels). Measured on the demo model (benchmarks/participant.py --margin-sweep): 2 keeps
# the decoded edit region within 1e-2 of the full pass; see docs/benchmarks.md.
MARGIN_LATENT = 2
# Resident bytes per image voxel per channel of the first level, for one pass of MONAI's
# AutoencoderKL in float32 without gradients (measured at 160^3, channels 64: the decoder's
# peak over the loaded model was 6.6 GB, 1.6 kB per voxel; the encoder's 3.6 GB). The decoder's
# figure is used for both, with headroom.
BYTES_PER_VOXEL_CHANNEL = 28.0
# What a pass may not count on: the interpreter, torch, the weights, the arrays the task holds.
RESERVED_GB = 1.5


@dataclass(frozen=True)
class Box:
    """A box on the image grid: ``start`` inclusive, ``stop`` exclusive, per axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @classmethod
    def whole(cls, shape) -> Box:
        return cls((0, 0, 0), tuple(int(s) for s in shape))

    @classmethod
    def around(cls, mask: np.ndarray) -> Box | None:
        idx = np.argwhere(np.asarray(mask) > 0)
        if idx.size == 0:
            return None
        return cls(tuple(int(v) for v in idx.min(0)), tuple(int(v) + 1 for v in idx.max(0)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def grow(self, by: int, shape) -> Box:
        return Box(
            tuple(max(a - by, 0) for a in self.start), tuple(min(b + by, int(n)) for b, n in zip(self.stop, shape))
        )

    def snap(self, factor: int, shape) -> Box:
        """Grown outwards to multiples of ``factor`` (the latent grid), within ``shape``."""
        return Box(
            tuple(a // factor * factor for a in self.start),
            tuple(min(-(-b // factor) * factor, int(n)) for b, n in zip(self.stop, shape)),
        )

    def latent(self, factor: int) -> tuple[slice, slice, slice]:
        return tuple(slice(a // factor, b // factor) for a, b in zip(self.start, self.stop))

    def within(self, outer: Box) -> tuple[slice, slice, slice]:
        """This box's slices inside ``outer``'s array."""
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, outer.start))

    def is_whole(self, shape) -> bool:
        return self.start == (0, 0, 0) and self.stop == tuple(int(s) for s in shape)


def memory_budget_gb(mem_gb: float | None = None) -> float:
    """What the autoencoder may use: ``mem_gb`` (``--mem``), else ``BIDS_USB_MEM_GB`` (set by the
    app from ``--mem``), else the host's available memory."""
    if mem_gb is None:
        env = os.environ.get("BIDS_USB_MEM_GB")
        mem_gb = float(env) if env else None
    if mem_gb is None:
        mem_gb = _available_gb()
    return float(mem_gb)


def _available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 16.0


def max_pass_voxels(first_channels: int, mem_gb: float, weights_gb: float = 0.0) -> int:
    """The most image voxels one autoencoder pass may cover within ``mem_gb`` (at least 16^3)."""
    free = max(mem_gb - RESERVED_GB - weights_gb, 0.0) * 2**30
    return max(int(free / (BYTES_PER_VOXEL_CHANNEL * first_channels)), 16**3)


def tiles(box: Box, factor: int, max_voxels: int, margin: int, shape) -> list[Box]:
    """Cores that partition ``box`` (multiples of ``factor``), each small enough that the core
    grown by ``margin`` covers at most ``max_voxels``; the fewest cuts, along the longest axes.
    No core is cut thinner than the margin (the budget is then exceeded rather than the work
    multiplied)."""
    counts = [1, 1, 1]

    def grown_voxels() -> int:
        return math.prod(
            min(-(-s // (c * factor)) * factor + 2 * margin, int(n)) for s, c, n in zip(box.shape, counts, shape)
        )

    while grown_voxels() > max_voxels:
        sizes = [s / c for s, c in zip(box.shape, counts)]
        axis = int(np.argmax(sizes))
        if box.shape[axis] / (counts[axis] + 1) < max(factor, margin):
            break  # cores thinner than the margin would cost more context than they decode
        counts[axis] += 1
    edges = []
    for a, b, c in zip(box.start, box.stop, counts):
        step = -(-(b - a) // (c * factor)) * factor
        cuts = list(range(a, b, step)) + [b]
        edges.append(list(zip(cuts[:-1], cuts[1:])))
    return [Box((x[0], y[0], z[0]), (x[1], y[1], z[1])) for x in edges[0] for y in edges[1] for z in edges[2]]


def decode_box(
    decode,
    latent: torch.Tensor,
    box: Box,
    *,
    factor: int,
    margin: int,
    max_voxels: int,
    shape,
    costs: CostLog | None = None,
) -> torch.Tensor:
    """``decode(latent)`` on ``box`` only (N, C, *box.shape): each tile's latent grown by ``margin``
    image voxels (a multiple of ``factor``), decoded, and its core kept. ``box`` is snapped to the
    latent grid first; what comes back covers the snapped box (``snapped_box`` gives it)."""
    costs = costs or NoCosts()
    box = box.snap(factor, shape)
    parts = tiles(box, factor, max_voxels, margin, shape)
    out = None
    for core in parts:
        grown = core.grow(margin, shape).snap(factor, shape)
        decoded = decode(latent[(..., *grown.latent(factor))])
        costs.ae_pass(
            "decode", grown.shape, latent.shape[0], region="whole" if grown.is_whole(shape) else "box", tiles=len(parts)
        )
        if out is None:
            out = decoded.new_empty((*decoded.shape[:2], *box.shape))
        out[(..., *core.within(box))] = decoded[(..., *core.within(grown))]
    return out


def _on_latent(box: Box, factor: int) -> Box:
    """``box`` (snapped to the latent grid) in latent voxels."""
    return Box(tuple(a // factor for a in box.start), tuple(b // factor for b in box.stop))


def encode_box(
    encode,
    volume: torch.Tensor,
    box: Box,
    *,
    factor: int,
    margin: int,
    max_voxels: int,
    shape,
    costs: CostLog | None = None,
) -> torch.Tensor:
    """``encode(volume)``'s latent over ``box`` (snapped to the latent grid): tiles as in ``decode_box``."""
    costs = costs or NoCosts()
    box = box.snap(factor, shape)
    parts = tiles(box, factor, max_voxels, margin, shape)
    out = None
    for core in parts:
        grown = core.grow(margin, shape).snap(factor, shape)
        latent = encode(volume[(..., *grown.slices)])
        costs.ae_pass(
            "encode", grown.shape, volume.shape[0], region="whole" if grown.is_whole(shape) else "box", tiles=len(parts)
        )
        if out is None:
            out = latent.new_empty((*latent.shape[:2], *(s // factor for s in box.shape)))
        core_latent = _on_latent(core, factor)
        out[(..., *core_latent.within(_on_latent(box, factor)))] = latent[
            (..., *core_latent.within(_on_latent(grown, factor)))
        ]
    return out


class GroupNormStatistics:
    """The statistics every GroupNorm of a network used in one whole-grid pass, to reuse on crops.

    ``with stats.record(net): net(whole)`` runs the network as it is (torch's own group norm) and
    keeps each layer's per-group mean and variance; ``with stats.frozen(net): net(crop)``
    normalises every layer of a cropped pass with those, so that a crop of a volume whose content
    differs from the recorded one only in a small region (the lesion) sees the whole volume's
    statistics instead of its own. Recorded with batch 1; applied to any batch.
    """

    def __init__(self):
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @contextlib.contextmanager
    def record(self, net: nn.Module):
        def statistics(module: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # float32 whatever the pass runs in: a bf16 recording pass (statistics_autocast)
            # must not hand its rounding to the float32 crops.
            grouped = x.reshape(x.shape[0], module.num_groups, -1).float()
            var, mean = torch.var_mean(grouped, dim=-1, unbiased=False)
            self.stats[id(module)] = (mean, var)
            return mean, var

        def forward(module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
            statistics(module, x)
            return F.group_norm(x, module.num_groups, module.weight, module.bias, module.eps)

        with _group_norm_forward(net, forward, statistics):
            yield self

    @contextlib.contextmanager
    def frozen(self, net: nn.Module):
        def statistics(module: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, var = self.stats[id(module)]
            n, groups = x.shape[0], module.num_groups
            return mean[:1].expand(n, groups), var[:1].expand(n, groups)

        def forward(module: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
            return normalise(module, x, *statistics(module, x))

        with _group_norm_forward(net, forward, statistics):
            yield self


def group_statistics(module: nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample, per-group mean and variance ``module`` normalises ``x`` with: the recorded
    or frozen ones inside ``GroupNormStatistics.record``/``frozen``, else ``x``'s own. For code
    that applies a GroupNorm piece by piece (usb_model.lean) instead of calling it."""
    active = module.__dict__.get("usb_group_statistics")
    if active is not None:
        return active(x)
    var, mean = torch.var_mean(x.reshape(x.shape[0], module.num_groups, -1), dim=-1, unbiased=False)
    return mean, var


def normalise(module: nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``module``'s GroupNorm of ``x`` (any part of a volume) with the given (N, groups) statistics."""
    n, groups = x.shape[0], module.num_groups
    grouped = x.reshape(n, groups, -1)
    normed = ((grouped - mean[..., None]) * torch.rsqrt(var[..., None] + module.eps)).reshape(x.shape)
    if module.affine:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        normed = normed * module.weight.reshape(shape) + module.bias.reshape(shape)
    return normed


@contextlib.contextmanager
def _group_norm_forward(net: nn.Module, forward, statistics):
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    try:
        for m in norms:
            m.forward = forward.__get__(m)
            m.usb_group_statistics = statistics.__get__(m)
        yield
    finally:
        for m in norms:
            del m.forward
            del m.usb_group_statistics
