"""The authors' state-dict layouts: their shapes read into configs, their names mapped to MONAI's.

Their denoiser (``LDM_3D``) and autoencoder (``AutoencoderKLAD``) follow the module layout of
MONAI Generative's networks, written with plain ``nn.Conv3d`` and a few other names. MONAI's
current ``DiffusionModelUNet`` and ``AutoencoderKL`` wrap each convolution in a
``Convolution`` block (one more ``.conv`` in the name) and renamed attention and upsampling
layers. The mapping is derived from the MONAI network itself: for each of its tensors the
upstream name is computed, looked up, and shape-checked, so a missing or misshapen tensor is an
error naming it, and every upstream tensor is either used or matches a pattern of
``DROPPED`` (a test lists them). One MONAI layer has no upstream tensor (``SYNTHESISED``): the
authors' attention never applies its output projection, so MONAI's is set to the identity.

MONAI's own ``load_old_state_dict`` is not used: it copies into the network's current state
dict, so a tensor absent from the file would silently keep its random initial value.

Channel widths, levels, attention and residual-block counts are read from the tensors' shapes;
GroupNorm groups (32) and attention heads cannot be, and default to the authors' (one head per
attention layer: head channels = that layer's width, as in the paper's 256 of 256).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from monai.networks.blocks import Convolution
from torch import nn

from .pickles import UpstreamError

# Tensors of the upstream files that are deliberately not converted, and why.
DROPPED = {
    "denoiser": {
        r"\.cond_emb_proj\.(weight|bias)$": "a condition projection the forward pass never calls",
        r"\.proj_attn\.(weight|bias)$": "an attention output projection the forward pass never applies",
    },
    "autoencoder": {
        r"^discriminator\.": "the adversarial discriminator used in training",
        r"^(perceptual_loss|loss_perceptual|perceptual|lpips)\.": "the perceptual network used in training",
    },
}

# The upstream autoencoder's own tensors; anything else must match DROPPED or is an error.
AUTOENCODER_PARTS = ("encoders.0.", "decoders.0.", "quant_conv_mu.", "quant_conv_log_sigma.", "post_quant_conv.")

# MONAI tensors with no upstream counterpart, and the value that reproduces the authors' network:
# their attention block returns ``attention(q, k, v) + x`` without applying its ``proj_attn``,
# so MONAI's output projection becomes the identity.
SYNTHESISED = {
    "denoiser": {
        r"\.attn\.out_proj\.weight$": lambda like: torch.eye(like.shape[0], dtype=like.dtype),
        r"\.attn\.out_proj\.bias$": torch.zeros_like,
    },
    "autoencoder": {},
}

# Name changes other than the Convolution wrapper, MONAI name -> upstream name (applied in order).
RENAMES = {
    "denoiser": [
        (r"\.attn\.to_([qkv])\.", r".to_\1."),
        (r"\.(resnets\.\d+|resnet_[12])\.norm2\.", r".\1.out_layers.0."),
        (r"\.(resnets\.\d+|resnet_[12])\.conv2\.", r".\1.out_layers.3."),
        (r"\.postconv\.", r".conv."),
    ],
    "autoencoder": [
        (r"^encoder\.", "encoders.0."),
        (r"^decoder\.", "decoders.0."),
        (r"\.postconv\.", ".conv."),
    ],
}


def dropped_reason(kind: str, key: str) -> str | None:
    """Why upstream tensor ``key`` is not converted, or None if it should be."""
    for pattern, reason in DROPPED[kind].items():
        if re.search(pattern, key):
            return reason
    return None


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their denoisers are saved from ``nn.DataParallel``: every key starts with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def upstream_names(network: nn.Module, kind: str) -> dict[str, str]:
    """For every tensor of the MONAI ``network``: the name the authors' file gives it (for a
    ``SYNTHESISED`` tensor, a name the file does not have)."""
    wrappers = {name for name, module in network.named_modules() if isinstance(module, Convolution)}
    names = {}
    for key in network.state_dict():
        module, _, param = key.rpartition(".")
        parent, _, last = module.rpartition(".")
        if last == "conv" and parent in wrappers:  # Convolution(...).conv.weight -> .weight
            module = parent
        elif module in wrappers:
            raise UpstreamError(f"internal: unexpected tensor {key} in a MONAI Convolution")
        name = f"{module}.{param}"
        for pattern, replacement in RENAMES[kind]:
            name = re.sub(pattern, replacement, name)
        names[key] = name
    return names


def convert_state(
    network: nn.Module, state: dict[str, torch.Tensor], kind: str, source: str
) -> dict[str, torch.Tensor]:
    """The MONAI state dict of ``network`` filled from upstream ``state``; every tensor checked."""
    converted, used = {}, set()
    expected = network.state_dict()
    for key, name in upstream_names(network, kind).items():
        synthesise = next((make for pattern, make in SYNTHESISED[kind].items() if re.search(pattern, key)), None)
        if synthesise is not None:
            converted[key] = synthesise(expected[key])
            continue
        if name not in state:
            raise UpstreamError(
                f"{source}: tensor {name!r} is missing; the file is incomplete or not the authors' layout"
            )
        value = state[name]
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UpstreamError(
                f"{source}: tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
        if not value.is_floating_point():
            raise UpstreamError(f"{source}: tensor {name!r} has dtype {value.dtype}, expected floating point")
        converted[key] = value.to(expected[key].dtype).contiguous()
        used.add(name)
    for name in sorted(set(state) - used):
        if dropped_reason(kind, name) is None:
            raise UpstreamError(
                f"{source}: unexpected tensor {name!r}; the file does not have the authors' {kind} layout"
            )
    return converted


# --- shapes -> configs ----------------------------------------------------------------------------


@dataclass
class DenoiserShape:
    channels: tuple[int, ...]
    attention_levels: tuple[bool, ...]
    num_res_blocks: int
    latent_channels: int

    @property
    def num_head_channels(self) -> int:
        """One head per attention layer (the authors' choice at both sizes); shapes cannot tell."""
        widths = [c for c, a in zip(self.channels, self.attention_levels) if a]
        return max(widths) if widths else self.channels[-1]


@dataclass
class AutoencoderShape:
    channels: tuple[int, ...]
    num_res_blocks: int
    latent_channels: int


def _need(state: dict[str, torch.Tensor], key: str, source: str, ndim: int) -> torch.Tensor:
    if key not in state:
        raise UpstreamError(f"{source}: tensor {key!r} is missing; the file is incomplete or not the authors' layout")
    if state[key].dim() != ndim:
        raise UpstreamError(f"{source}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {ndim} dimensions")
    return state[key]


def _indices(state, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


def _one_count(counts: list[int], what: str, source: str) -> int:
    if not counts or min(counts) < 1 or len(set(counts)) != 1:
        raise UpstreamError(f"{source}: {what} per level {counts} are not one positive number; unsupported layout")
    return counts[0]


def denoiser_shape(state: dict[str, torch.Tensor], source: str) -> DenoiserShape:
    """Levels, widths, attention and residual blocks of an upstream denoiser, from its tensors."""
    conv_in = _need(state, "conv_in.weight", source, 5)
    levels = _indices(state, r"down_blocks\.(\d+)\.")
    if levels != list(range(len(levels))) or not levels:
        raise UpstreamError(f"{source}: down_blocks {levels} are not numbered 0..n-1; unsupported layout")
    channels, res, attention = [], [], []
    for i in levels:
        channels.append(int(_need(state, f"down_blocks.{i}.resnets.0.conv1.weight", source, 5).shape[0]))
        res.append(len(_indices(state, rf"down_blocks\.{i}\.resnets\.(\d+)\.")))
        attention.append(any(k.startswith(f"down_blocks.{i}.attentions.") for k in state))
    latent = int(_need(state, "out.2.weight", source, 5).shape[0])
    if conv_in.shape[1] != 2 * latent:
        raise UpstreamError(
            f"{source}: tensor 'conv_in.weight' takes {conv_in.shape[1]} channels; a USB denoiser takes "
            f"2 x {latent} (latent and condition)"
        )
    return DenoiserShape(tuple(channels), tuple(attention), _one_count(res, "residual blocks", source), latent)


def autoencoder_shape(state: dict[str, torch.Tensor], source: str) -> AutoencoderShape:
    """Levels, widths and residual blocks of the upstream autoencoder, from its encoder's tensors.

    The encoder is a sequence ``conv, (res x n, down) x (L - 1), res x n, norm, conv``.
    """
    blocks = _indices(state, r"encoders\.0\.blocks\.(\d+)\.")
    if blocks != list(range(len(blocks))) or len(blocks) < 4:
        raise UpstreamError(f"{source}: encoder blocks {blocks} are not numbered 0..n-1; unsupported layout")
    channels, res, count = [], [], 0
    for i in blocks[1:-2]:
        prefix = f"encoders.0.blocks.{i}."
        if f"{prefix}norm1.weight" in state:
            width = int(_need(state, f"{prefix}conv1.weight", source, 5).shape[0])
            if count == 0:
                channels.append(width)
            count += 1
        elif f"{prefix}conv.weight" in state:  # a downsampling step closes a level
            res.append(count)
            count = 0
        else:
            found = sorted(k[len(prefix) :] for k in state if k.startswith(prefix))
            raise UpstreamError(
                f"{source}: encoder block {i} ({', '.join(found[:4])}) is neither a residual block "
                "nor a downsampling step; attention in the autoencoder is not supported"
            )
    res.append(count)
    latent = int(_need(state, "quant_conv_mu.weight", source, 5).shape[0])
    return AutoencoderShape(tuple(channels), _one_count(res, "residual blocks", source), latent)


def split_autoencoder(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The autoencoder's own tensors of a Lightning state dict; the rest must be DROPPED ones."""
    own = {k: v for k, v in state.items() if k.startswith(AUTOENCODER_PARTS)}
    for name in sorted(set(state) - set(own)):
        if dropped_reason("autoencoder", name) is None:
            raise UpstreamError(
                f"{source}: unexpected tensor {name!r}; the file does not have the authors' autoencoder layout"
            )
    return own
