"""The command line's contract: options, and one line plus a BIDS-App exit code per bad input."""

import json
import shutil

import nibabel as nib
import numpy as np

from bids_usb.cli import main


def _dataset(root, subjects=("01",), with_description=True):
    root.mkdir(parents=True, exist_ok=True)
    if with_description:
        (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
        (root / "README").write_text("test dataset\n")
    head = np.zeros((20, 24, 20), np.int16)
    head[4:16, 4:20, 4:16] = 300
    for sub in subjects:
        anat = root / f"sub-{sub}" / "anat"
        anat.mkdir(parents=True)
        nib.save(nib.Nifti1Image(head, np.diag([4.0, 4.0, 4.0, 1.0])), str(anat / f"sub-{sub}_T1w.nii.gz"))
    return root


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "bids_usb" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--participant-label",
        "--task",
        "--t-start",
        "--alpha0",
        "--plugin",
        "--n-samples",
        "--skull-stripped",
    ):
        assert option in out


def test_usage_errors_are_64_and_unknown_level_17(tmp_path, capsys):
    assert main([]) == 64
    assert main([str(tmp_path), str(tmp_path / "out"), "participant", "--no-such-option"]) == 64
    assert main([str(tmp_path), str(tmp_path / "out"), "subject"]) == 17
    lines = _err(capsys)
    assert lines[-1].startswith("bids_usb: error: analysis level 'subject'")


def test_missing_dataset_description_is_16_unless_skipped(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids", with_description=False)
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint)]) == 16
    assert "dataset_description.json" in _err(capsys)[-1]
    # Skipped: validation does not run, and the run gets as far as the participant selection.
    code = main(
        [
            str(bids),
            str(tmp_path / "out"),
            "participant",
            "--skip-bids-validation",
            "--model",
            str(tiny_checkpoint),
            "--participant-label",
            "99",
        ]
    )
    assert code == 18


def test_participant_label_matching_nobody_is_18(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids", subjects=("01", "02"))
    assert (
        main(
            [
                str(bids),
                str(tmp_path / "out"),
                "participant",
                "--model",
                str(tiny_checkpoint),
                "--participant-label",
                "sub-07",
            ]
        )
        == 18
    )
    assert "07" in _err(capsys)[-1]


def test_output_inside_the_input_is_64(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids")
    assert main([str(bids), str(bids / "out"), "participant", "--model", str(tiny_checkpoint)]) == 64
    assert main([str(bids), str(bids), "participant", "--model", str(tiny_checkpoint)]) == 64
    assert not (bids / "out").exists()


def test_missing_or_corrupt_model(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids")
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tmp_path / "nope")]) == 66
    assert "nope" in _err(capsys)[-1]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "config.json").write_text("{")
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model", str(broken)]) == 65
    assert "config.json" in _err(capsys)[-1]
    (broken / "model.safetensors").unlink()
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model", str(broken)]) == 66
    assert "model.safetensors" in _err(capsys)[-1]


def test_flair_model_refuses_a_t1w_only_dataset(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids")
    flair = tmp_path / "flair_model"
    shutil.copytree(tiny_checkpoint, flair)
    cfg = json.loads((flair / "config.json").read_text())
    cfg["grid"]["contrast"] = "FLAIR"
    (flair / "config.json").write_text(json.dumps(cfg))
    assert main([str(bids), str(tmp_path / "out"), "participant", "--model", str(flair)]) == 66
    assert "FLAIR" in _err(capsys)[-1]


def test_bad_images_are_65_and_nothing_else_runs(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids")
    path = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.int16), np.eye(4)), str(path))
    assert (
        main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint)]) == 16
    )  # the validator sees it
    assert "TOO_MANY_DIMENSIONS" in _err(capsys)[-1]
    assert (
        main(
            [str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint), "--skip-bids-validation"]
        )
        == 65
    )
    assert "3D volume" in _err(capsys)[-1]
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), str(path))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert (
        main(
            [str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint), "--skip-bids-validation"]
        )
        == 65
    )
    assert "truncated or corrupt" in _err(capsys)[-1]


def test_embed_without_any_mask_is_65(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids")
    assert (
        main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint), "--task", "embed"])
        == 65
    )
    assert "--lesion-mask" in _err(capsys)[-1]


def test_participant_labels_take_several_values_like_fmriprep(tmp_path, capsys, tiny_checkpoint):
    bids = _dataset(tmp_path / "bids", subjects=("01", "02"))
    # Several labels after one flag, with and without 'sub-': none matches, so 18 names them all.
    code = main(
        [
            str(bids),
            str(tmp_path / "out"),
            "participant",
            "--participant-label",
            "07",
            "sub-08",
            "--model",
            str(tiny_checkpoint),
        ]
    )
    assert code == 18
    message = _err(capsys)[-1]
    assert "07" in message and "08" in message


def test_a_bids_database_dir_is_shared_and_a_bad_one_is_one_line(tmp_path, capsys, tiny_checkpoint):
    """--bids-database-dir: created by the first run, reused after; a file there is 64, one
    line, before anything is written; the group level's metrics has no use for it (64)."""
    bids = _dataset(tmp_path / "bids", subjects=("01", "02"))
    base = [str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_checkpoint)]
    (tmp_path / "taken").write_text("a file\n")
    assert main([*base, "--bids-database-dir", str(tmp_path / "taken"), "--skip-bids-validation"]) == 64
    (line,) = _err(capsys)
    assert line.startswith("bids_usb: error: --bids-database-dir") and "not a directory" in line
    assert not (tmp_path / "out").exists()
    # The index comes before any image is read: a label matching nobody (18) stops after it.
    db = tmp_path / "db"
    assert main([*base, "--bids-database-dir", str(db), "--participant-label", "07", "--skip-bids-validation"]) == 18
    assert (db / "layout_index.sqlite").is_file()
    metrics = [str(bids), str(tmp_path / "out"), "group", "--group-task", "metrics", "--bids-database-dir", str(db)]
    assert main(metrics) == 64
    assert "--bids-database-dir does not apply" in _err(capsys)[-1]
