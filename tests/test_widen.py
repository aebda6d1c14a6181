"""A wider decoder grown from a trained narrow one (usb_model.train.widen): it must start as the
same function, learn in its new channels, and travel through checkpoints and --init-checkpoint."""

import pytest
import torch


@pytest.fixture()
def narrow_and_wide(tiny_cfg):
    from usb_model.networks import USBNetworks
    from usb_model.train.widen import widened_networks

    torch.manual_seed(3)
    narrow = USBNetworks(tiny_cfg).eval()
    # Non-trivial GroupNorm affines and biases, as a trained decoder has.
    with torch.no_grad():
        for p in narrow.autoencoder.decoder.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    wide_cfg = tiny_cfg.replace(autoencoder={"decoder_width": 2})
    torch.manual_seed(4)
    wide = widened_networks(wide_cfg, narrow).eval()
    return narrow, wide


def test_the_widened_decoder_decodes_as_the_narrow_one(narrow_and_wide):
    narrow, wide = narrow_and_wide
    first_conv = wide.autoencoder.decoder.blocks[0].conv.weight
    assert first_conv.shape[0] == 2 * narrow.autoencoder.decoder.blocks[0].conv.weight.shape[0]
    torch.manual_seed(5)
    latent = torch.randn(2, *narrow.cfg.latent_shape)
    with torch.no_grad():
        a, b = narrow.decode(latent), wide.decode(latent)
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    # The rest of the model is the narrow one's, tensor for tensor.
    wide_state = wide.state_dict()
    for key, value in narrow.state_dict().items():
        if not key.startswith("autoencoder.decoder."):
            assert torch.equal(wide_state[key], value), key


def test_the_new_channels_learn_from_the_first_step(narrow_and_wide):
    """Their outgoing weights start at zero; a zero with a zero gradient would stay there."""
    _, wide = narrow_and_wide
    out_conv = wide.autoencoder.decoder.blocks[-1].conv
    narrow_in = out_conv.weight.shape[1] // 2
    assert torch.count_nonzero(out_conv.weight[:, narrow_in:]) == 0
    torch.manual_seed(6)
    latent = torch.randn(1, *wide.cfg.latent_shape)
    wide.decode(latent).square().mean().backward()
    assert out_conv.weight.grad[:, narrow_in:].abs().sum() > 0


def test_a_decoder_is_not_narrowed(narrow_and_wide, tiny_cfg):
    from usb_model.train.widen import widened_networks

    _, wide = narrow_and_wide
    with pytest.raises(ValueError, match="not narrowed"):
        widened_networks(tiny_cfg, wide)


def test_init_checkpoint_widens_the_decoder_and_the_wide_checkpoint_reloads(tmp_path, tiny_cfg):
    from usb_model.checkpoint import load_checkpoint, save_checkpoint
    from usb_model.networks import USBNetworks
    from usb_model.train.cli import networks_from_checkpoint

    torch.manual_seed(7)
    narrow = USBNetworks(tiny_cfg).eval()
    save_checkpoint(narrow, tmp_path / "narrow")
    wide_cfg = tiny_cfg.replace(autoencoder={"decoder_width": 2})
    wide, lineage = networks_from_checkpoint(wide_cfg, tmp_path / "narrow")
    assert lineage["decoder_widened"] == [1, 2]
    latent = torch.randn(1, *tiny_cfg.latent_shape)
    with torch.no_grad():
        assert torch.allclose(narrow.decode(latent), wide.eval().decode(latent), atol=1e-5)
    save_checkpoint(wide, tmp_path / "wide")
    again = load_checkpoint(tmp_path / "wide")
    assert again.cfg.autoencoder.decoder_width == 2
    with torch.no_grad():
        assert torch.equal(again.decode(latent), wide.decode(latent))
    # A preset that differs in more than the decoder's width is refused by the checkpoint's name.
    import click

    other = tiny_cfg.replace(autoencoder={"decoder_width": 2, "latent_channels": 4})
    with pytest.raises(click.ClickException, match="narrow"):
        networks_from_checkpoint(other, tmp_path / "narrow")
