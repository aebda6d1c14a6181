"""The bundled model's card shows only numbers measured on its own weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from usb_model.config import SamplingConfig

ROOT = Path(__file__).resolve().parents[1]


def _bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_demo_model", ROOT / "scripts" / "bundle_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(directory: Path, name: str, result: dict) -> None:
    (directory / f"{name}.json").write_text(json.dumps(result))


def test_the_card_reads_only_results_of_its_own_weights(tmp_path):
    bundle = _bundle_script()
    ours, theirs = "a" * 64, "b" * 64
    sampling = SamplingConfig(steps=100, ddim_eta=0.0)
    env = {"n": 16, "steps": 100, "ddim_eta": 0.0, "date": "2026-12-06"}
    _write(tmp_path, "autoencoder", {"environment": {"model_sha256": theirs, "date": "2026-12-06"}})
    _write(tmp_path, "autoencoder-campaign", {"environment": {"model_sha256": ours, "date": "2026-12-06"}})
    # Two generation runs of our weights: only the one that sampled as the config does counts.
    _write(tmp_path, "generation-eta1", {"environment": env | {"model_sha256": ours, "ddim_eta": 1.0}})
    _write(tmp_path, "generation-ours", {"environment": env | {"model_sha256": ours}})
    # A result that names no weights is left out: it may be of any model.
    _write(tmp_path, "quality", {"summary": {}, "date": "2026-12-06"})
    _write(tmp_path, "healing-a", {"model_sha256": ours, "date": "2026-12-05"})
    _write(tmp_path, "healing-b", {"model_sha256": ours, "date": "2026-12-06"})
    _write(tmp_path, "residual-variants-x", {"model_sha256": theirs, "date": "2026-12-06"})

    found = bundle.measured_results(ours, sampling, tmp_path)

    assert found["autoencoder"]["_file"] == "autoencoder-campaign.json"
    assert found["generation"]["_file"] == "generation-ours.json"
    assert [h["_file"] for h in found["healing"]] == ["healing-a.json", "healing-b.json"]
    assert "quality" not in found and "residual" not in found


def test_a_lesion_only_fine_tune_borrows_its_parents_results_where_the_lesion_net_is_not_run(tmp_path):
    """Healing, detection and embedding run the autoencoder and the brain net only: a fine-tune of
    the lesion net leaves them bit for bit, so their results on the parent's weights still hold
    (marked as such); generation runs the lesion net and must be measured again."""
    bundle = _bundle_script()
    ours, parent, other = "a" * 64, "p" * 64, "b" * 64
    env = {"n": 16, "steps": 100, "ddim_eta": 0.0, "date": "2026-12-06"}
    _write(tmp_path, "healing-parent", {"model_sha256": parent, "date": "2026-12-06"})
    _write(tmp_path, "healing-other", {"model_sha256": other, "date": "2026-12-06"})
    _write(tmp_path, "generation-parent", {"environment": env | {"model_sha256": parent}})
    _write(tmp_path, "detection-controls", {"environment": {"model_sha256": parent, "date": "2026-12-06"}})
    meta = {
        "notes": {
            "trained_steps": {"autoencoder": 0, "lesion": 3000, "brain": 0},
            "initialised_from": {"model_sha256": parent, "trained_steps": {"lesion": 6000, "brain": 12000}},
        }
    }
    assert bundle.lesion_only_parent(meta) == parent
    found = bundle.measured_results(ours, SamplingConfig(steps=100), tmp_path, parent=bundle.lesion_only_parent(meta))
    assert [h["_file"] for h in found["healing"]] == ["healing-parent.json"]
    assert found["healing"][0]["_parent"] == parent
    assert found["controls"]["_file"] == "detection-controls.json"
    assert "generation" not in found
    # A fine-tune that also trained the brain net changes what healing runs: no borrowing.
    meta["notes"]["trained_steps"]["brain"] = 10
    assert bundle.lesion_only_parent(meta) is None
    # So does an autoencoder adopted from a run of its own (usb_model.train.adopt counts its steps).
    meta["notes"]["trained_steps"].update(brain=0, autoencoder=40)
    assert bundle.lesion_only_parent(meta) is None


def test_a_superseded_run_is_left_off_the_card(tmp_path):
    bundle = _bundle_script()
    ours = "a" * 64
    _write(tmp_path, "healing-old", {"model_sha256": ours, "date": "2026-12-06", "superseded_by": "healing-new.json"})
    _write(tmp_path, "healing-new", {"model_sha256": ours, "date": "2026-12-07"})
    found = bundle.measured_results(ours, SamplingConfig(steps=100), tmp_path)
    assert [h["_file"] for h in found["healing"]] == ["healing-new.json"]


def test_the_card_shows_the_newest_healing_run_of_each_setting_and_no_one_class_probes(tmp_path):
    """Sessions rerun the same healing setting as the app changes (41 runs of the bundled model on
    one day): the card shows one table per anatomy and mask kind, the newest, and leaves probes of
    a single class (often of a code variant not adopted) to the docs."""
    bundle = _bundle_script()
    ours = "a" * 64
    base = "python benchmarks/healing.py --cases-per-class 1 --classes subtle,wmh,lacune,infarct,territorial"
    runs = {
        "healing-head-new": ("--anatomy colin-head", "2026-12-07T18:00:00+0000"),
        "healing-head-old": ("--anatomy colin-head", "2026-12-07T09:00:00+0000"),
        "healing-head-short": ("--anatomy colin-head --mask short1", "2026-12-07T08:00:00+0000"),
        "healing-template": ("", "2026-12-07T07:00:00+0000"),
    }
    for name, (options, finished) in runs.items():
        _write(
            tmp_path,
            name,
            {"model_sha256": ours, "date": "2026-12-07", "finished": finished, "command": f"{base} {options}"},
        )
    probe = "python benchmarks/healing.py --classes infarct --anatomy colin-head"
    _write(tmp_path, "healing-probe", {"model_sha256": ours, "date": "2026-12-07", "finished": "~", "command": probe})
    found = bundle.measured_results(ours, SamplingConfig(steps=100), tmp_path)
    assert [h["_file"] for h in found["healing"]] == [  # real heads first, exact masks first
        "healing-head-new.json",
        "healing-head-short.json",
        "healing-template.json",
    ]


def test_the_card_of_a_model_with_an_adopted_autoencoder_says_where_it_came_from():
    bundle = _bundle_script()
    from usb_model.config import load_preset

    cfg = load_preset("tiny")
    meta = {
        "notes": {
            "trained_steps": {"autoencoder": 4600, "lesion": 3000, "brain": 0},
            "autoencoder_from": {
                "checkpoint": ".campaign-run/lowkl/checkpoint",
                "model_sha256": "d" * 64,
                "trained_steps": {"autoencoder": 4600},
                "weights": "EMA",
                "batch_size": cfg.training.batch_size + 5,
                "denoisers_from_sha256": "p" * 64,
            },
        }
    }
    stages = {s: {"steps": 10, "seconds": 1.0, "loss": 0.1} for s in ("autoencoder", "lesion")}
    text = bundle.card("demo", cfg, meta, stages, "a" * 64, 1.0, {})
    assert "## Autoencoder adopted from a run of its own" in text and "d" * 64 in text and "p" * 64 in text
    # Each stage's row has its own run's batch: the autoencoder's is the donor run's.
    assert f"| autoencoder | 10 | {cfg.training.batch_size + 5} |" in text
    assert f"| lesion | 10 | {cfg.training.batch_size} |" in text
