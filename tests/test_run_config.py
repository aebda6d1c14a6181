"""The run configuration: typed values, options checked against the level and task."""

from __future__ import annotations

import pytest

from bids_usb.config import RunConfig, parse_labels, parse_mem_gb
from bids_usb.errors import UsageError
from usb_model.config import EditParameters


def _opts(**kw):
    base = {"bids_dir": "/data", "output_dir": "/out", "analysis_level": "participant"}
    return {**base, **kw}


def test_labels_are_typed_once():
    assert parse_labels(("sub-01 02", "03,sub-04"), "sub-", "--participant-label") == ("01", "02", "03", "04")
    assert parse_labels((), "sub-", "--participant-label") is None
    for bad in ((" ",), ("",), ("sub-",)):
        with pytest.raises(UsageError, match="--participant-label"):
            parse_labels(bad, "sub-", "--participant-label")


def test_labels_from_a_file(tmp_path):
    """The array recipe's participants.txt can be handed over whole; a missing file is a usage error."""
    listing = tmp_path / "participants.txt"
    listing.write_text("sub-01\nsub-03, 04\n")
    assert parse_labels((str(listing), "07"), "sub-", "--participant-label") == ("01", "03", "04", "07")
    with pytest.raises(UsageError, match="not a readable file"):
        parse_labels((str(tmp_path / "missing.txt"),), "sub-", "--participant-label")


def test_stop_on_first_crash_reaches_nipype(tmp_path):
    from nipype import config

    for flag in (True, False):
        RunConfig.from_options(_opts(stop_on_first_crash=flag)).nipype.apply(tmp_path)
        assert config.getboolean("execution", "stop_on_first_crash") is flag


@pytest.mark.parametrize(
    "text,gb",
    [("16000", 16000 / 1024), ("16000MB", 16000 / 1024), ("16G", 16.0), ("16GB", 16.0), ("1T", 1024.0), (None, None)],
)
def test_mem_is_megabytes_unless_a_unit_is_given(text, gb):
    """As fMRIPrep users write it: --mem 16000 is 16000 MB."""
    assert parse_mem_gb(text) == pytest.approx(gb) if gb else parse_mem_gb(text) is None


def test_sampling_options_become_one_edit_parameters_object():
    config = RunConfig.from_options(
        _opts(task="heal", heal_mode="mask", steps=20, alpha0=5.0, no_acg=True, lcg_eta=3.0),
        given=["task", "heal_mode", "steps", "alpha0", "no_acg"],
    )
    assert config.workflow.sampling == EditParameters(mode="mask", steps=20, alpha0=5.0, acg=False)
    assert config.workflow.sampling.overrides() == {"mode": "mask", "steps": 20, "alpha0": 5.0, "acg": False}


def test_the_blend_band_is_a_sampling_parameter():
    config = RunConfig.from_options(_opts(task="heal", band_mm=(0, 2)), given=["task", "band_mm"])
    assert config.workflow.sampling.band_mm == (0.0, 2.0)
    with pytest.raises(UsageError, match="--band-mm"):
        RunConfig.from_options(_opts(analysis_level="group", group_task="generate", band_mm=(0, 2)), given=["band_mm"])


def test_a_band_that_does_not_fade_is_refused():
    from click.testing import CliRunner

    from bids_usb.cli import cli

    result = CliRunner().invoke(cli, ["/data", "/out", "participant", "--band-mm", "3", "1"])
    assert result.exit_code == 2 and "OUTER (1) must exceed INNER (3)" in result.output


@pytest.mark.parametrize(
    "level,extra,given,flag",
    [
        ("participant", {"ground_truth": "/gt"}, ["ground_truth"], "--ground-truth"),
        ("participant", {"task": "heal", "lcg_eta": 1.0}, ["lcg_eta"], "--eta"),
        ("group", {"group_task": "metrics", "t_start": 100}, ["group_task", "t_start"], "--t-start"),
        ("group", {"group_task": "generate", "heal_mode": "mask"}, ["group_task", "heal_mode"], "--heal-mode"),
        ("group", {"group_task": "train", "n_generate": 3}, ["group_task", "n_generate"], "--n-generate"),
    ],
)
def test_an_option_that_does_not_apply_is_a_usage_error(level, extra, given, flag):
    with pytest.raises(UsageError, match=flag):
        RunConfig.from_options(_opts(analysis_level=level, **extra), given=given)


def test_options_that_apply_are_accepted():
    config = RunConfig.from_options(
        _opts(analysis_level="group", group_task="train", preset="tiny", train_steps="autoencoder=2"),
        given=["group_task", "preset", "train_steps"],
    )
    assert config.scope == "group:train" and config.group.preset == "tiny"


def test_paths_the_workflow_reads_are_made_absolute(tmp_path, monkeypatch, tiny_checkpoint):
    """nipype runs each node in its own folder: a relative --model or --lesion-mask given on the
    command line (found in the main process) would name nothing there."""
    import shutil

    from bids_usb.model import ModelBundle

    shutil.copytree(tiny_checkpoint, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    config = RunConfig.from_options(_opts(model="tiny", task="embed", lesion_mask="mask.nii.gz"), given=["task"])
    assert config.workflow.model == tmp_path / "tiny" and config.workflow.lesion_mask == tmp_path / "mask.nii.gz"
    assert ModelBundle.open("tiny").path == tmp_path / "tiny"


def test_nipype_logs_go_to_stderr_not_stdout(tmp_path, capsys):
    """stdout carries only the report paths: a node's warning (here, the registration's poor-fit
    warning's logger) is written to stderr, where nipype's own handler would write it to stdout."""
    import logging

    from nipype import logging as nlogging

    from bids_usb.config import Nipype

    Nipype().apply(tmp_path)
    nlogging.getLogger("nipype.interface").warning("a node's warning")
    captured = capsys.readouterr()
    assert "a node's warning" not in captured.out
    assert "a node's warning" in captured.err
    assert logging.getLogger("nipype").handlers  # the handler is kept, only pointed elsewhere


def test_nipype_logs_follow_stderr_when_it_is_swapped(tmp_path, monkeypatch, capsys):
    """A stream taken once outlives its owner: the app applied under one stderr (a test's
    capture, a redirected run) must not write a later record to that stream once it is closed."""
    import io

    from nipype import logging as nlogging

    from bids_usb.config import Nipype

    earlier = io.StringIO()
    monkeypatch.setattr("sys.stderr", earlier)
    Nipype().apply(tmp_path)
    monkeypatch.undo()
    earlier.close()
    nlogging.getLogger("nipype.interface").warning("a later warning")
    Nipype().apply(tmp_path)  # a later run in the same process (the suite's next test)
    err = capsys.readouterr().err
    assert "a later warning" in err and "Logging error" not in err
