import pytest

from usb_model.config import USBConfig, list_presets, load_config, load_preset


def test_presets_exist_and_match_the_paper():
    assert {"paper", "tiny"} <= set(list_presets())
    paper = load_preset("paper")
    assert paper.grid.shape == (160, 160, 160)
    assert paper.autoencoder.channels == (64, 128, 128, 128)
    assert paper.autoencoder.latent_channels == 3
    assert paper.autoencoder.downsample_factor == 8
    assert paper.latent_shape == (3, 20, 20, 20)
    assert paper.denoiser.channels == (128, 256, 256)
    assert paper.denoiser.attention_levels == (False, False, True)
    assert paper.schedule.num_train_timesteps == 1024
    assert (paper.schedule.beta_start, paper.schedule.beta_end) == (1e-4, 2e-2)
    s = paper.sampling
    assert (s.t_start_heal, s.t_start_embed, s.alpha0, s.k, s.lcg_eta, s.ddim_eta) == (300, 500, 20.0, 0.5, 1.0, 0.0)


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_json_round_trip(name, tmp_path):
    cfg = load_preset(name)
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    again = load_config(path)
    assert again == cfg
    assert USBConfig.from_json(cfg.to_json()) == cfg


def test_replace_changes_one_field_only():
    cfg = load_preset("tiny")
    other = cfg.replace(sampling={"k": 1.0})
    assert other.sampling.k == 1.0
    assert other.sampling.alpha0 == cfg.sampling.alpha0
    assert cfg.sampling.k == 0.5


def test_unknown_fields_are_refused(tmp_path):
    data = load_preset("tiny").to_dict()
    data["sampling"]["alpha"] = 3
    with pytest.raises(ValueError, match="alpha"):
        USBConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("nope")


def test_grid_must_fit_the_autoencoder():
    cfg = load_preset("tiny").replace(grid={"shape": [30, 32, 32]})
    with pytest.raises(ValueError, match="divisible"):
        _ = cfg.latent_shape
