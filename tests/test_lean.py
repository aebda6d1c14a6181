"""usb_model.lean: the whole-grid decode one block at a time, convolutions in slabs."""

import pytest
import torch
from monai.networks.nets import AutoencoderKL

from usb_model import lean
from usb_model.passes import GroupNormStatistics


def _autoencoder(attention: bool) -> AutoencoderKL:
    torch.manual_seed(0)
    net = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        latent_channels=3,
        num_res_blocks=(1, 1),
        norm_num_groups=4,
        attention_levels=(False, attention),
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()
    # Random, not trained: scale the weights so every block moves the signal (a decoder that
    # ignores its input would pass any comparison).
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


@pytest.mark.parametrize("attention", [False, True])
def test_lean_decode_equals_the_plain_decode(attention, monkeypatch):
    net = _autoencoder(attention)
    monkeypatch.setattr(lean, "SLAB_ROWS", 3)  # slabs that do not divide the depth, halos at both faces
    z = torch.randn(2, 3, 5, 6, 7)  # batch 2, an odd, anisotropic latent
    plain = net.decode(z)
    slabbed = lean.lean_decode(net, z)
    assert slabbed.shape == plain.shape == (2, 1, 10, 12, 14)
    assert plain.std() > 0.01
    torch.testing.assert_close(slabbed, plain, rtol=1e-4, atol=1e-5)


def test_lean_decode_records_and_applies_the_same_group_norm_statistics():
    """The edit path records the decoder's GroupNorm statistics on a whole-grid decode and
    applies them to crops: recorded on a lean decode they are the plain decode's."""
    net = _autoencoder(False)
    z = torch.randn(1, 3, 6, 6, 6)
    plain_stats, lean_stats = GroupNormStatistics(), GroupNormStatistics()
    with plain_stats.record(net):
        net.decode(z)
    with lean_stats.record(net):
        lean.lean_decode(net, z)
    decoder_norms = [id(m) for m in net.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert decoder_norms and set(decoder_norms) <= set(lean_stats.stats)
    for key in decoder_norms:
        for a, b in zip(lean_stats.stats[key], plain_stats.stats[key]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with plain_stats.frozen(net):
        torch.testing.assert_close(lean.lean_decode(net, z), net.decode(z), rtol=1e-4, atol=1e-5)


def test_a_convolution_slabs_cannot_compute_runs_as_it_is():
    strided = torch.nn.Conv3d(2, 2, 3, stride=2, padding=1)
    assert lean._plain_conv(strided) is None
    x = torch.randn(1, 2, 6, 6, 6)
    torch.testing.assert_close(lean._conv(strided, x), strided(x))
