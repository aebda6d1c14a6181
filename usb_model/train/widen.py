"""A wider decoder that starts as an exact copy of a trained narrow one (Net2Net-style).

The demo model's decoder (16-32 channels) flattened at 29 dB on a fixed encoder (issue 22,
phase 4). A wider decoder trained from scratch would first have to relearn those 29 dB on a
2-core CPU; copied in, it starts there and only has to gain. Each old channel keeps its
weights in the leading slice of the wider tensor; the weights that carry a new channel into an
old one are zero, so the old channels compute what they did and the image is unchanged. The new
channels start from the usual random initialisation: their outgoing weights are zero but get
gradients at once, so they learn from the first step. GroupNorm stays exact because the groups
grow with the channels (``networks.build_decoder``): the old channels fill the first groups,
as many to a group as before.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import USBConfig
from ..networks import USBNetworks


def widen_into(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s weights into the leading slices of ``target``'s (same names, every
    dimension at least as large) and zero what would feed a new channel into an old one."""
    old = source.state_dict()
    new = target.state_dict()
    if set(old) != set(new):
        missing = sorted(set(old) ^ set(new))
        raise ValueError(f"the two modules differ in more than width (e.g. {missing[0]!r})")
    with torch.no_grad():
        for name, wide in new.items():
            narrow = old[name]
            if wide.ndim != narrow.ndim or any(w < n for w, n in zip(wide.shape, narrow.shape)):
                raise ValueError(f"{name}: {tuple(narrow.shape)} does not fit in {tuple(wide.shape)}")
            lead = tuple(slice(0, n) for n in narrow.shape)
            wide[lead] = narrow
            if wide.ndim >= 2:  # a convolution (out, in, ...): new inputs into old outputs
                wide[: narrow.shape[0], narrow.shape[1] :] = 0
    target.load_state_dict(new)


def widened_networks(cfg: USBConfig, source: USBNetworks) -> USBNetworks:
    """``source``'s networks under ``cfg``, which may ask for a wider decoder and nothing else
    that changes a tensor; everything but the decoder is copied as it is."""
    networks = USBNetworks(cfg)
    if cfg.autoencoder.decoder_width < source.cfg.autoencoder.decoder_width:
        raise ValueError("a decoder can be widened, not narrowed")
    decoder_prefix = "autoencoder.decoder."
    kept = {k: v for k, v in source.state_dict().items() if not k.startswith(decoder_prefix)}
    expected = {k: v.shape for k, v in networks.state_dict().items() if not k.startswith(decoder_prefix)}
    differing = sorted(set(kept) ^ set(expected)) or [k for k in kept if kept[k].shape != expected[k]]
    if differing:
        raise ValueError(f"the networks differ in more than the decoder's width (e.g. {differing[0]!r})")
    networks.load_state_dict(kept, strict=False)
    widen_into(source.autoencoder.decoder, networks.autoencoder.decoder)
    return networks
