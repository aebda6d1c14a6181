"""benchmarks/learning_curve.py on a directory that holds a checkpoint and no training state."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import learning_curve  # noqa: E402


def test_a_checkpoint_without_a_training_state_is_a_point_with_its_steps_and_no_hours(tmp_path, tiny_checkpoint):
    run = tmp_path / "adopted"
    shutil.copytree(tiny_checkpoint, run / "checkpoint")
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())
    meta["notes"] = {"trained_steps": {"autoencoder": 40, "brain": 7}}
    (run / "checkpoint" / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "curve.json"
    assert (
        learning_curve.main([str(run), "--stage", "autoencoder", "--n", "1", "--threads", "1", "--out", str(out)]) == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["steps"] == 40 and row["hours"] is None and row["cpu_hours"] is None
    assert row["metric"].startswith("held-out PSNR")
