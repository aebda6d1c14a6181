"""The residual block of the authors' USB denoisers: time conditioning by scale and shift.

MONAI's ``DiffusionUNetResnetBlock`` adds the projected time embedding to the features before
the second normalisation (``h + temb``). The authors' block instead projects the embedding to
``2 x out_channels`` values, splits them into (scale, shift) and modulates the *normalised*
features: ``norm2(h) * (1 + scale) + shift`` (the "adaptive group norm" of improved DDPM).
Everything else (norms, convolutions, skip connection, the UNet around it) is MONAI's, so the
block is a subclass that only widens ``time_emb_proj`` and changes ``forward``; a
``DiffusionModelUNet`` gets it by swapping its blocks in place (``use_scale_shift``), which
keeps MONAI's module names and so its state-dict layout.

Which block a denoiser uses is ``DenoiserConfig.res_block``: a checkpoint says how it was built.
"""

from __future__ import annotations

import torch
from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet, DiffusionUNetResnetBlock
from torch import nn

RES_BLOCKS = ("monai", "scale_shift")


class ScaleShiftResnetBlock(DiffusionUNetResnetBlock):
    """MONAI's diffusion residual block with scale-and-shift (FiLM) time conditioning."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.time_emb_proj = nn.Linear(self.emb_channels, 2 * self.out_channels)

    @classmethod
    def like(cls, block: DiffusionUNetResnetBlock) -> ScaleShiftResnetBlock:
        """A scale-shift block with the same shape as MONAI's ``block`` (fresh weights)."""
        return cls(
            spatial_dims=block.spatial_dims,
            in_channels=block.channels,
            temb_channels=block.emb_channels,
            out_channels=block.out_channels,
            up=block.up,
            down=block.down,
            norm_num_groups=block.norm1.num_groups,
            norm_eps=block.norm1.eps,
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.nonlinearity(self.norm1(x))
        if self.upsample is not None:
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        temb = self.time_emb_proj(self.nonlinearity(emb))
        temb = temb.reshape(*temb.shape, *([1] * self.spatial_dims))
        scale, shift = temb.chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.nonlinearity(h))
        return self.skip_connection(x) + h


def use_scale_shift(unet: DiffusionModelUNet) -> DiffusionModelUNet:
    """Replace every residual block of ``unet`` by a scale-shift block of the same shape, in place."""
    swaps = [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, DiffusionUNetResnetBlock) and not isinstance(module, ScaleShiftResnetBlock)
    ]
    for name, block in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, ScaleShiftResnetBlock.like(block))
    return unet
