"""Importing the authors' published USB weights (usb_model.upstream, ``usb-import-upstream``).

The reference files (``../shared/upstream-usb``, or ``$USB_UPSTREAM_REFERENCE``) were made by
running the authors' own code: reduced-width networks saved in their formats, with inputs and
the outputs their code computed.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from usb_model.config import load_preset
from usb_model.networks import build_autoencoder, build_denoiser
from usb_model.scale_shift import ScaleShiftResnetBlock
from usb_model.upstream.layout import (
    DROPPED,
    autoencoder_shape,
    convert_state,
    denoiser_shape,
    dropped_reason,
    split_autoencoder,
    strip_data_parallel,
)
from usb_model.upstream.pickles import (
    StandIn,
    UpstreamError,
    read_lightning_state_dict,
    read_pth_state_dict,
    restricted_load,
)

# Next to the repository (../shared/upstream-usb from its root), or wherever the variable says.
REFERENCE = Path(
    os.environ.get("USB_UPSTREAM_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "upstream-usb")
)
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "ldm_tiny.pth").is_file(),
    reason=f"the authors' reference files are not at {REFERENCE} (set USB_UPSTREAM_REFERENCE)",
)
TOLERANCE = 1e-5


def tiny_config(grid=32, voxel=5.0):
    from usb_model.upstream.convert import upstream_config

    den = denoiser_shape(strip_data_parallel(read_pth_state_dict(REFERENCE / "ldm_tiny.pth")), "ldm")
    ae = autoencoder_shape(split_autoencoder(read_lightning_state_dict(REFERENCE / "vae_tiny.ckpt"), "vae"), "vae")
    return upstream_config(den, ae, (grid,) * 3, voxel)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --- the residual block ------------------------------------------------------------------------


def test_default_denoiser_is_monai_and_scale_shift_swaps_every_block(tiny_cfg):
    assert tiny_cfg.denoiser.res_block == "monai"
    plain = build_denoiser(tiny_cfg)
    assert not any(isinstance(m, ScaleShiftResnetBlock) for m in plain.modules())
    swapped = build_denoiser(tiny_cfg.replace(denoiser={"res_block": "scale_shift"}))
    blocks = [m for m in swapped.modules() if isinstance(m, ScaleShiftResnetBlock)]
    n_plain = sum(type(m).__name__ == "DiffusionUNetResnetBlock" for m in plain.modules())
    assert len(blocks) == n_plain > 0
    assert all(b.time_emb_proj.out_features == 2 * b.out_channels for b in blocks)
    with pytest.raises(ValueError, match="res_block"):
        build_denoiser(tiny_cfg.replace(denoiser={"res_block": "film"}))


def test_scale_shift_block_modulates_the_normalised_features():
    torch.manual_seed(0)
    block = ScaleShiftResnetBlock(spatial_dims=3, in_channels=8, temb_channels=16, out_channels=8, norm_num_groups=4)
    block.eval()
    torch.nn.init.normal_(block.conv2.conv.weight)  # MONAI zero-initialises it
    x, emb = torch.randn(2, 8, 4, 4, 4), torch.randn(2, 16)
    h = block.conv1(torch.nn.functional.silu(block.norm1(x)))
    scale, shift = block.time_emb_proj(torch.nn.functional.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
    expected = x + block.conv2(torch.nn.functional.silu(block.norm2(h) * (1 + scale) + shift))
    assert torch.allclose(block(x, emb), expected, atol=1e-6)


def test_existing_checkpoints_still_load(tiny_checkpoint):
    from usb_model.checkpoint import load_checkpoint

    networks = load_checkpoint(tiny_checkpoint)
    assert networks.cfg.denoiser.res_block == "monai" and networks.cfg.grid.normalisation == "percentile"


# --- the reference outputs ----------------------------------------------------------------------


@needs_reference
def test_converted_denoiser_reproduces_the_authors_eps():
    cfg = tiny_config()
    net = build_denoiser(cfg).eval()
    state = strip_data_parallel(read_pth_state_dict(REFERENCE / "ldm_tiny.pth"))
    net.load_state_dict(convert_state(net, state, "denoiser", "ldm_tiny.pth"), strict=True)
    io = load_file(str(REFERENCE / "ldm_tiny_io.safetensors"))
    with torch.no_grad():
        eps = net(torch.cat([io["x"], io["cond"]], dim=1), io["t"])
    assert io["eps"].abs().max() > 1e-2  # a non-trivial reference
    assert (eps - io["eps"]).abs().max().item() < TOLERANCE


@needs_reference
def test_converted_autoencoder_reproduces_the_authors_latent_and_decoding():
    cfg = tiny_config()
    ae = build_autoencoder(cfg).eval()
    state = split_autoencoder(read_lightning_state_dict(REFERENCE / "vae_tiny.ckpt"), "vae_tiny.ckpt")
    ae.load_state_dict(convert_state(ae, state, "autoencoder", "vae_tiny.ckpt"), strict=True)
    io = load_file(str(REFERENCE / "vae_tiny_io.safetensors"))
    with torch.no_grad():
        z_mu, _ = ae.encode(io["image"])
        decoded = ae.decode(z_mu)
    assert (z_mu - io["z_mu"]).abs().max().item() < TOLERANCE
    assert (decoded - io["decoded"]).abs().max().item() < TOLERANCE


@needs_reference
def test_every_paper_key_is_mapped_or_deliberately_dropped():
    """The full-size layouts, on the meta device (shapes only, no memory)."""
    from usb_model.upstream.convert import upstream_config

    keys = json.loads((REFERENCE / "keys_paper.json").read_text())
    (den_name, den_keys), (vae_name, vae_keys) = keys.items()
    den_state = strip_data_parallel({k: torch.empty(s, device="meta") for k, s in den_keys.items()})
    vae_state = split_autoencoder({k: torch.empty(s, device="meta") for k, s in vae_keys.items()}, vae_name)
    den, ae = denoiser_shape(den_state, den_name), autoencoder_shape(vae_state, vae_name)
    assert (den.channels, den.attention_levels) == ((128, 256, 256), (False, False, True))
    assert (den.num_res_blocks, den.num_head_channels) == (1, 256)
    assert (ae.channels, ae.num_res_blocks, ae.latent_channels) == ((64, 128, 128, 128), 2, 3)
    cfg = upstream_config(den, ae)
    assert cfg.latent_shape == (3, 20, 20, 20)
    with torch.device("meta"):
        networks = {"denoiser": build_denoiser(cfg), "autoencoder": build_autoencoder(cfg)}
    used = {
        "denoiser": convert_state(networks["denoiser"], den_state, "denoiser", den_name),
        "autoencoder": convert_state(networks["autoencoder"], vae_state, "autoencoder", vae_name),
    }
    for kind, _state in (("denoiser", den_state), ("autoencoder", vae_state)):
        assert set(used[kind]) == set(networks[kind].state_dict())
    dropped = sorted(k for k in den_state if dropped_reason("denoiser", k))
    # What is dropped, said plainly: the unused condition projections of the 11 residual blocks
    # and the output projections of the 4 attention blocks (never applied by the authors' forward).
    assert len(dropped) == 2 * (11 + 4)
    assert {k.rsplit(".", 2)[-2] for k in dropped} == {"cond_emb_proj", "proj_attn"}
    assert not [k for k in vae_state if dropped_reason("autoencoder", k)]
    assert set(DROPPED) == {"denoiser", "autoencoder"}
    assert dropped_reason("autoencoder", "discriminator.model.0.weight")
    assert not dropped_reason("autoencoder", "encoders.0.blocks.0.weight")


# --- safe reading and tampered files ------------------------------------------------------------


class _RunsCode:
    """A pickle payload that runs a shell command when unpickled normally."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@needs_reference
def test_the_lightning_checkpoint_is_read_without_omegaconf_or_lightning():
    before = set(sys.modules)
    obj = restricted_load(REFERENCE / "vae_tiny.ckpt")
    assert isinstance(obj["hyper_parameters"]["cfg"], StandIn)
    assert "omegaconf" in obj["hyper_parameters"]["cfg"].pickled_name
    assert not {m for m in set(sys.modules) - before if m.startswith(("omegaconf", "lightning", "pytorch_lightning"))}


@needs_reference
def test_a_pickle_that_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    state = read_lightning_state_dict(REFERENCE / "vae_tiny.ckpt")
    ckpt = tmp_path / "vae.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": _RunsCode(marker)}, ckpt)
    assert read_lightning_state_dict(ckpt).keys() == state.keys()  # the payload became an inert stand-in
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {**state, "encoders.0.blocks.0.weight": _RunsCode(marker)}}, bad)
    with pytest.raises(UpstreamError, match=r"bad\.ckpt: entry 'encoders\.0\.blocks\.0\.weight' .*not a tensor"):
        read_lightning_state_dict(bad)
    pth = tmp_path / "usb_brain.pth"
    torch.save([_RunsCode(marker)], pth)
    with pytest.raises(UpstreamError, match=r"usb_brain\.pth: refused by torch's weights-only loader") as info:
        read_pth_state_dict(pth)
    assert "system" in one_line(info.value)
    assert not marker.exists()
    # The control: the payload does run when unpickled normally, so the test could fail.
    with open(ckpt.with_suffix(".pkl"), "wb") as fh:
        pickle.dump(_RunsCode(marker), fh)
    with open(ckpt.with_suffix(".pkl"), "rb") as fh:
        pickle.load(fh)  # noqa: S301 - deliberately, on a file this test wrote
    assert marker.exists()


def test_unknown_classes_are_never_imported(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"a": 1}}, path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    # a GLOBAL of a module that does not exist, called with REDUCE: normal unpickling would import it
    payload = (
        b"\x80\x02}q\x00(X\x0a\x00\x00\x00state_dictq\x01}q\x02X\x01\x00\x00\x00hcno_such_pkg_xyz\nThing\n)Rq\x03u."
    )
    members[name] = payload
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    obj = restricted_load(path)
    assert isinstance(obj["h"], StandIn) and obj["h"].pickled_name == "no_such_pkg_xyz.Thing"
    assert "no_such_pkg_xyz" not in sys.modules


@needs_reference
@pytest.mark.parametrize("tamper", ["missing", "shape"])
def test_a_tampered_denoiser_fails_with_one_line_naming_file_and_tensor(tmp_path, tamper):
    state = read_pth_state_dict(REFERENCE / "ldm_tiny.pth")
    key = "module.down_blocks.1.resnets.0.conv1.weight"
    if tamper == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(32, 32, 3, 3)
    bad = tmp_path / "usb_lesion.pth"
    torch.save([state], bad)
    from usb_model.upstream import import_upstream

    with pytest.raises(UpstreamError) as info:
        import_upstream(
            bad,
            REFERENCE / "ldm_tiny.pth",
            REFERENCE / "vae_tiny.ckpt",
            tmp_path / "out",
            grid_shape=(32,) * 3,
            voxel_mm=5.0,
            with_template=False,
        )
    text = one_line(info.value)
    assert str(bad) in text and "down_blocks.1.resnets.0.conv1.weight" in text
    assert not (tmp_path / "out").exists()


@needs_reference
def test_a_truncated_storage_and_a_misshapen_vae_tensor_fail_clearly(tmp_path):
    src = REFERENCE / "vae_tiny.ckpt"
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    victim = next(n for n in members if n.endswith("/data/0"))
    members[victim] = members[victim][:-4]
    bad = tmp_path / "vae.ckpt"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(UpstreamError, match=r"vae\.ckpt: storage '0' holds \d+ bytes"):
        read_lightning_state_dict(bad)

    state = read_lightning_state_dict(src)
    state["quant_conv_mu.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save({"state_dict": state}, bad)
    cfg = tiny_config()
    ae = build_autoencoder(cfg)
    with pytest.raises(UpstreamError) as info:
        convert_state(ae, split_autoencoder(read_lightning_state_dict(bad), str(bad)), "autoencoder", str(bad))
    assert "'quant_conv_mu.weight' has shape (3, 3, 1, 1), expected (3, 3, 1, 1, 1)" in one_line(info.value)
    state = read_lightning_state_dict(src)
    state["encoders.1.blocks.0.weight"] = torch.zeros(1)
    with pytest.raises(UpstreamError, match="unexpected tensor 'encoders.1.blocks.0.weight'"):
        split_autoencoder(state, "vae.ckpt")


# --- the converter, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not (REFERENCE / "ldm_tiny.pth").is_file():
        pytest.skip(f"the authors' reference files are not at {REFERENCE}")
    from usb_model.upstream import import_upstream

    out = tmp_path_factory.mktemp("upstream") / "usb-upstream"
    return import_upstream(
        REFERENCE / "ldm_tiny.pth",
        REFERENCE / "ldm_tiny.pth",
        REFERENCE / "vae_tiny.ckpt",
        out,
        grid_shape=(32,) * 3,
        voxel_mm=5.0,
    )


def test_the_converted_checkpoint_records_the_authors_conventions(converted):
    from bids_usb.model import ModelBundle
    from usb_model.checkpoint import read_meta
    from usb_model.upstream.convert import sha256_file

    bundle = ModelBundle.open(converted)  # what the BIDS App's --model does
    cfg, meta = bundle.config, read_meta(converted)
    assert cfg.denoiser.res_block == "scale_shift" and cfg.grid.normalisation == "minmax"
    assert cfg.training.empty_condition == "zeros" and meta["empty_condition"] == "zeros"
    assert abs(meta["latent_scale"] - 0.18215) < 1e-7
    s = cfg.sampling
    assert (s.t_start_heal, s.t_start_embed, s.alpha0, s.k, s.ddim_eta) == (300, 500, 20.0, 0.5, 0.0)
    assert (s.edit_stride, s.mask_stride, s.t_start_mask) == (1, 3, 100)  # ACG: the paper's; mask mode: 34 steps
    card = (converted / "README.md").read_text()
    for role, name in (("lesion", "ldm_tiny.pth"), ("vae", "vae_tiny.ckpt")):
        digest = sha256_file(REFERENCE / name)
        assert meta["training_data"]["upstream_files"][role]["sha256"] == digest
        assert digest in card
    full = load_preset("paper")
    assert full.grid.shape == (160, 160, 160)  # the converter's default grid is the paper's


def test_a_converted_checkpoint_heals_and_embeds(converted):
    from usb_model.tasks import USB

    usb = USB.from_checkpoint(converted, device="cpu")
    image = torch.as_tensor(np.asarray(usb.template_t1w, dtype=np.float32))
    mask = torch.zeros_like(image)
    mask[12:18, 12:18, 12:18] = 1
    healed = usb.heal(image, mask, stride=100)
    acg = usb.heal(image, mode="acg", stride=100)
    embedded = usb.embed(image, mask, stride=250)
    for result in (healed, acg, embedded):
        assert result.image.shape == (32, 32, 32) and torch.isfinite(result.image).all()
    assert healed.params["mode"] == "mask"
    outside = mask == 0
    assert torch.equal(embedded.image[outside & (embedded.region == 0)], image[outside & (embedded.region == 0)])


@needs_reference
def test_the_command_exits_65_with_one_line_for_bad_data(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "usb_lesion.pth"
    torch.save([_RunsCode(marker)], evil)
    cmd = [
        sys.executable,
        "-m",
        "usb_model.upstream.cli",
        "--lesion",
        str(evil),
        "--brain",
        str(REFERENCE / "ldm_tiny.pth"),
        "--vae",
        str(REFERENCE / "vae_tiny.ckpt"),
        "--grid",
        "32",
        "--voxel-size",
        "5",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 65, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(evil) in lines[0] and lines[0].startswith("usb-import-upstream: ")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_minmax_normalisation_maps_the_brain_maximum_to_one():
    from usb_model.intensity import normalise_brain

    image = np.linspace(0, 200, 1000, dtype=np.float32).reshape(10, 10, 10)
    brain = np.ones_like(image, dtype=bool)
    assert normalise_brain(image, brain, method="minmax").max() == pytest.approx(1.0)
    assert normalise_brain(image, brain, method="minmax")[5, 5, 5] == pytest.approx(image[5, 5, 5] / 200)
    percentile = normalise_brain(image, brain)
    assert (percentile >= 1.0).sum() > 1  # this project's rule clips the top half percent
    with pytest.raises(ValueError, match="normalisation"):
        normalise_brain(image, brain, method="zscore")
