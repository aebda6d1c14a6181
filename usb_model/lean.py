"""The autoencoder's whole-grid decode, one block at a time, with few feature maps alive.

At the paper's 160^3 grid the decoder's last level carries 64 channels (128 out of the last
upsampling): one feature map is 1-2 GiB in float32, and MONAI's ``AutoencoderKL.decode`` keeps
several alive at once (the residual block's input, its normalised and activated copies, the
upsampled map, the convolutions' workspaces): 7.8 GB peak on 2 CPU cores (issue 26). A cropped
decode cannot replace the whole one: GroupNorm's statistics span the volume, and mask-mode
healing records them from a whole-grid decode of the input.

Here each block runs over the whole grid in turn, but every 3x3x3 convolution is computed slab
by slab along the first axis, each slab read with its one-row halo into an output allocated
once; the GroupNorm and SiLU in front of a convolution are applied to each slab as it is read
(with the whole map's statistics, ``passes.group_statistics``, so ``GroupNormStatistics``
records and applies them as on a plain pass), and the nearest x2 upsampling in front of one
upsamples only the rows the slab needs. Alive at most: a residual block's input and two maps of
its output width. ``python benchmarks/lean_decode.py`` (2026-12-06, paper-size random weights,
2 threads): 160^3 in 75.8 s and 4.94 GB peak against 73.2 s and 7.84 GB plain, largest
difference 8e-6. On the demo model's 64^3 grid the plain decode is 4x faster (0.4 s) and no
larger, so the app runs this only where a plain pass does not fit the memory budget.

Blocks it does not know (attention, at the coarse levels where it is cheap) run as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.autoencoderkl import AEKLResBlock, AutoencoderKL
from torch import nn

from .passes import group_statistics

#: Output rows per slab: a slab's padded input and output are a few percent of a map. At 128^3
#: on the paper-size decoder, 2, 4 and 8 rows took 35.2, 34.8 and 37.4 s (plain: 36.0 s); more
#: rows were slower still (the convolution's working set leaves the caches).
SLAB_ROWS = 4


def _plain_conv(module: nn.Module) -> nn.Conv3d | None:
    """The Conv3d inside MONAI's ``Convolution(conv_only=True)`` (or a bare one), when it is a
    stride-1, odd-kernel, 'same'-padded convolution that slabs can compute; else None."""
    conv = module.conv if isinstance(module, Convolution) and len(module) == 1 else module
    if not isinstance(conv, nn.Conv3d):
        return None
    k = conv.kernel_size
    if (
        conv.stride != (1, 1, 1)
        or conv.dilation != (1, 1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or any(s % 2 == 0 for s in k)
        or tuple(conv.padding) != tuple(s // 2 for s in k)
    ):
        return None
    return conv


def _conv_slabs(conv: nn.Conv3d, rows, depth: int, spatial, like: torch.Tensor, out=None) -> torch.Tensor:
    """``conv`` over an input of ``depth`` rows that ``rows(lo, hi)`` hands out in pieces:
    each output slab from its input rows and a halo of the kernel's reach, zero-padded at
    the volume's faces as the plain convolution pads. With ``out``, added into it."""
    pd, ph, pw = conv.padding
    add = out is not None
    if out is None:
        out = like.new_empty((like.shape[0], conv.out_channels, depth, *spatial))
    for z0 in range(0, depth, SLAB_ROWS):
        z1 = min(z0 + SLAB_ROWS, depth)
        lo, hi = max(z0 - pd, 0), min(z1 + pd, depth)
        piece = F.pad(rows(lo, hi), (pw, pw, ph, ph, pd - (z0 - lo), pd - (hi - z1)))
        if add:
            out[:, :, z0:z1] += F.conv3d(piece, conv.weight, conv.bias)
        else:
            out[:, :, z0:z1] = F.conv3d(piece, conv.weight, conv.bias)
    return out


def _conv(
    module: nn.Module, x: torch.Tensor, *, norm: nn.GroupNorm | None = None, silu: bool = True, out=None
) -> torch.Tensor:
    """``module(x)``, or with ``norm``: ``module(silu(norm(x)))`` (``silu=False``: no activation),
    without the normalised map: each slab is normalised (with the whole map's statistics) and
    activated as it is read."""
    act = (lambda t: F.silu(t, inplace=True)) if silu else (lambda t: t)  # noqa: E731
    conv = _plain_conv(module)
    if conv is None:
        y = module(x if norm is None else act(norm(x)))
        return y if out is None else out.add_(y)
    if norm is None:
        rows = lambda lo, hi: x[:, :, lo:hi]  # noqa: E731
    else:
        scale, shift = _channel_affine(norm, *group_statistics(norm, x))
        rows = lambda lo, hi: act(torch.addcmul(shift, x[:, :, lo:hi], scale))  # noqa: E731
    return _conv_slabs(conv, rows, x.shape[2], x.shape[3:], x, out)


def _channel_affine(norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The GroupNorm with (N, groups) statistics as one multiply-add per channel, (N, C, 1, 1, 1)
    each: a slab is normalised in one pass over its memory."""
    n, channels = mean.shape[0], norm.num_channels
    per_group = channels // norm.num_groups
    scale = torch.rsqrt(var + norm.eps).repeat_interleave(per_group, dim=1)
    shift = -mean.repeat_interleave(per_group, dim=1) * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return scale.reshape(n, channels, 1, 1, 1), shift.reshape(n, channels, 1, 1, 1)


def _upsample_kind(block: UpSample) -> bool:
    """Whether ``block`` is MONAI's nearest x2 upsampling followed by a plain convolution."""
    children = dict(block.named_children())
    up, post = children.get("upsample_non_trainable"), children.get("postconv")
    return (
        set(children) == {"upsample_non_trainable", "postconv"}
        and isinstance(up, nn.Upsample)
        and up.mode == "nearest"
        and up.size is None
        and tuple(up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor,) * 3) == (2.0,) * 3
        and _plain_conv(post) is not None
    )


def _upsample(block: UpSample, x: torch.Tensor) -> torch.Tensor:
    """MONAI's nearest x2 upsampling and its post-convolution (``_upsample_kind``), without the
    upsampled map: each slab upsamples only the input rows its halo needs."""
    conv = _plain_conv(block.postconv)
    depth = 2 * x.shape[2]
    spatial = tuple(2 * s for s in x.shape[3:])

    def rows(lo: int, hi: int) -> torch.Tensor:
        a, b = lo // 2, (hi + 1) // 2
        part = F.interpolate(x[:, :, a:b], scale_factor=2.0, mode="nearest")
        return part[:, :, lo - 2 * a : hi - 2 * a]

    return _conv_slabs(conv, rows, depth, spatial, x)


def _res_block(block: AEKLResBlock, x: torch.Tensor) -> torch.Tensor:
    """``AEKLResBlock.forward``: each convolution reads its GroupNorm and SiLU slab by slab, and
    the shortcut is added into the second convolution's output. Alive at most: the block's input
    and two maps of its output width."""
    h = _conv(block.conv1, x, norm=block.norm1)
    h = _conv(block.conv2, h, norm=block.norm2)
    shortcut = block.nin_shortcut
    if isinstance(shortcut, nn.Identity):
        return h.add_(x)
    return _conv(shortcut, x, out=h)


@torch.no_grad()
def lean_decode(autoencoder: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """``autoencoder.decode(z)`` (MONAI's AutoencoderKL), one sample and one block at a time."""
    outs = []
    for sample in z.split(1):
        x = autoencoder.post_quant_conv(sample)
        blocks = list(autoencoder.decoder.blocks)
        i = 0
        while i < len(blocks):
            block = blocks[i]
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if isinstance(block, AEKLResBlock):
                x = _res_block(block, x)
            elif isinstance(block, UpSample):
                x = _upsample(block, x) if _upsample_kind(block) else block(x)
            elif isinstance(block, nn.GroupNorm) and following is not None and _plain_conv(following) is not None:
                # MONAI's decoder closes with a GroupNorm straight into the output convolution
                x = _conv(following, x, norm=block, silu=False)
                i += 1
            elif isinstance(block, Convolution | nn.Conv3d):
                x = _conv(block, x)
            else:
                x = block(x)
            i += 1
        outs.append(x)
    return outs[0] if len(outs) == 1 else torch.cat(outs)
