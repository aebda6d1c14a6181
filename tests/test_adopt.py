"""usb_model.train.adopt: a model's denoisers with another run's autoencoder."""

from __future__ import annotations

import json

import pytest
import torch

from usb_model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from usb_model.config import load_preset
from usb_model.networks import USBNetworks
from usb_model.template import load_template
from usb_model.train.adopt import AdoptError, adopt, main
from usb_model.train.log import append_log, read_log


def checkpoint(path, cfg, seed, scale, notes=None):
    torch.manual_seed(seed)
    networks = USBNetworks(cfg)
    networks.latent_scale.fill_(scale)
    template = load_template(cfg.grid)
    save_checkpoint(
        networks,
        path,
        template={"t1w": template.t1w, "brain_mask": template.brain_mask, "affine": template.affine},
        notes=notes or {},
    )
    return networks.eval()


@pytest.fixture()
def pair(tmp_path):
    """A model with calibrated sampling settings and a log, and a donor run with a wider decoder."""
    cfg = load_preset("tiny")
    model_cfg = cfg.replace(sampling={"detect_threshold": 0.33})
    model = checkpoint(tmp_path / "model", model_cfg, 0, 2.5, {"trained_steps": {"autoencoder": 0, "lesion": 7}})
    append_log(tmp_path / "model" / "training_log.tsv", {"stage": "lesion", "step": 7, "loss": 0.1, "seconds": 3.0})
    donor_cfg = cfg.replace(autoencoder={"decoder_width": 2}, sampling={"detect_threshold": 0.12})
    donor = checkpoint(
        tmp_path / "donor",
        donor_cfg,
        1,
        2.5,
        {"trained_steps": {"autoencoder": 40}, "autoencoder_weights": "EMA"},
    )
    return tmp_path, model, donor


def test_the_model_keeps_its_denoisers_and_settings_and_takes_the_donors_autoencoder(pair):
    tmp_path, model, donor = pair
    donor_log = tmp_path / "donor.tsv"
    (donor_log).write_text("stage\tstep\tloss\tseconds\tanchor\nautoencoder\t40\t0.002\t9.5\t0.0003\n")
    out = adopt(tmp_path / "model", tmp_path / "donor", tmp_path / "out", [donor_log])

    adopted = load_checkpoint(out)
    for part in ("lesion", "brain"):
        for key, value in getattr(model, part).state_dict().items():
            assert torch.equal(getattr(adopted, part).state_dict()[key], value), (part, key)
    for key, value in donor.autoencoder.state_dict().items():
        assert torch.equal(adopted.autoencoder.state_dict()[key], value), key
    assert float(adopted.latent_scale) == 2.5
    assert adopted.cfg.autoencoder.decoder_width == 2
    assert adopted.cfg.sampling.detect_threshold == 0.33  # the model's calibration, not the donor run's default

    notes = json.loads((out / "meta.json").read_text())["notes"]
    assert notes["trained_steps"] == {"autoencoder": 40, "lesion": 7}
    assert notes["autoencoder_from"]["model_sha256"] == checkpoint_sha256(tmp_path / "donor")
    assert notes["autoencoder_from"]["denoisers_from_sha256"] == checkpoint_sha256(tmp_path / "model")
    assert notes["autoencoder_weights"] == "EMA"
    assert notes["autoencoder_from"]["batch_size"] == load_preset("tiny").training.batch_size

    rows = read_log(tmp_path / "out" / "log.tsv")
    assert [(r["stage"], r["step"]) for r in rows] == [("lesion", 7), ("autoencoder", 40)]
    assert rows[0]["anchor"] is None and rows[1]["anchor"] == pytest.approx(0.0003)


def test_a_donor_at_another_latent_scale_is_refused_with_one_line(pair, capsys):
    tmp_path, _, _ = pair
    checkpoint(tmp_path / "rescaled", load_preset("tiny"), 1, 3.0)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "model"), str(tmp_path / "rescaled"), str(tmp_path / "out")])
    assert exc.value.code == 65
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "latent scale 3.0" in err and str(tmp_path / "rescaled") in err
    assert not (tmp_path / "out").exists()


def test_a_donor_trained_for_other_denoisers_is_refused(pair):
    tmp_path, _, _ = pair
    cfg = load_preset("tiny")
    other = cfg.replace(denoiser={"num_res_blocks": cfg.denoiser.num_res_blocks + 1})
    checkpoint(tmp_path / "other", other, 1, 2.5)
    with pytest.raises(AdoptError, match="denoiser differs"):
        adopt(tmp_path / "model", tmp_path / "other", tmp_path / "out")
