"""The template through TemplateFlow, offline: a TEMPLATEFLOW_HOME laid out as TemplateFlow lays
it out, with files the test writes, and the network unreachable.

The files are nilearn's maps resampled onto a 3 mm grid in TemplateFlow's field of view (its
res-1 grid is 193 x 229 x 193 at 1 mm, origin (-96, -132, -78): ``template_description.json``),
written under TemplateFlow's res-1 names; the T1w keeps a fake skull and the CSF map is a value
of its own, so that the test can tell TemplateFlow's path from nilearn's.
"""

from __future__ import annotations

import json
import logging
import socket

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("templateflow")

from usb_model import template as tpl_module  # noqa: E402
from usb_model.config import GridConfig  # noqa: E402
from usb_model.template import (  # noqa: E402
    TEMPLATE_NAME,
    TemplateUnavailable,
    load_template,
    resolve_source,
    template_1mm,
)

GRID = GridConfig(shape=(40, 48, 40), voxel_size=(4.0, 4.0, 4.0))
CSF_VALUE = 0.375  # inside the brain, where nilearn's brain - GM - WM would vary
SKULL_VALUE = 2.0  # outside the brain mask: must not reach the template's T1w


def _clear_caches():
    for cached in (
        tpl_module._templateflow_files,
        tpl_module._resolve,
        tpl_module._load_cached,
        tpl_module._brain_centre,
    ):
        cached.cache_clear()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No socket may connect while these tests run; every attempt is recorded (and refused)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TEMPLATEFLOW_AUTOUPDATE", "0")
    _clear_caches()
    yield attempts
    _clear_caches()
    assert attempts == [], "something tried to reach the network"


def _tf_grid():
    zooms = 3.0
    shape = tuple(int(np.ceil(n / zooms)) for n in (193, 229, 193))
    affine = np.diag([zooms, zooms, zooms, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    return shape, affine


def _resampled(img: nib.Nifti1Image, shape, affine) -> np.ndarray:
    vox = np.linalg.inv(img.affine) @ affine
    data = np.asarray(img.dataobj, dtype=np.float32)
    return ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=shape, order=1)


def _write_home(home, *, empty: set[str] = frozenset()):
    """A TemplateFlow home with tpl-MNI152NLin2009aSym's res-1 maps (``empty``: left at 0 bytes,
    as TemplateFlow's skeleton leaves every file it has not downloaded)."""
    from nilearn import datasets

    folder = home / f"tpl-{TEMPLATE_NAME}"
    folder.mkdir(parents=True)
    (folder / "template_description.json").write_text(
        json.dumps({"Identifier": TEMPLATE_NAME, "Name": "ICBM 152 Nonlinear Symmetrical template version 2009a"})
    )
    shape, affine = _tf_grid()
    brain = _resampled(datasets.load_mni152_brain_mask(resolution=1), shape, affine) > 0.5
    t1w = _resampled(datasets.load_mni152_template(resolution=1), shape, affine) * 80.0  # another scale
    t1w[~brain & (ndimage.binary_dilation(brain, iterations=3))] = SKULL_VALUE * 80.0  # a skull
    maps = {
        "T1w": t1w,
        "desc-brain_mask": brain.astype(np.uint8),
        "label-GM_probseg": _resampled(datasets.load_mni152_gm_template(resolution=1), shape, affine),
        "label-WM_probseg": _resampled(datasets.load_mni152_wm_template(resolution=1), shape, affine),
        "label-CSF_probseg": np.where(brain, CSF_VALUE, 0.0).astype(np.float32),
    }
    for name, data in maps.items():
        path = folder / f"tpl-{TEMPLATE_NAME}_res-1_{name}.nii.gz"
        if name in empty:
            path.touch()
        else:
            nib.save(nib.Nifti1Image(data, affine), str(path))
    return folder


def test_templateflow_home_is_read_offline_and_named(tmp_path, monkeypatch):
    from templateflow.client import TemplateFlowClient

    home = tmp_path / "templateflow"
    _write_home(home)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    calls = []
    get = TemplateFlowClient.get

    def spy(self, template, **kwargs):  # templateflow.api.get is this method of its client
        out = get(self, template, **kwargs)
        calls.append((template, kwargs, out))
        return out

    monkeypatch.setattr(TemplateFlowClient, "get", spy)
    source = resolve_source("templateflow", fallback=False)
    got = sorted(path.name for _, _, path in calls)
    assert got == sorted(
        f"tpl-{TEMPLATE_NAME}_res-1_{n}.nii.gz"
        for n in ("T1w", "desc-brain_mask", "label-GM_probseg", "label-WM_probseg", "label-CSF_probseg")
    )
    assert all(path.parent == home / f"tpl-{TEMPLATE_NAME}" for _, _, path in calls)
    assert source.name == "templateflow" and source.fallback is None
    assert source.record() == {
        "Name": TEMPLATE_NAME,
        "Source": "TemplateFlow",
        "Files": f"TemplateFlow tpl-{TEMPLATE_NAME} res-1 in {home}",
    }
    tf = load_template(GridConfig(shape=GRID.shape, voxel_size=GRID.voxel_size, template_source="templateflow"))
    nl = load_template(GRID)
    assert tf.source == "templateflow" and nl.source == "nilearn"
    inner = tf.brain_mask & ndimage.binary_erosion(tf.brain_mask, iterations=2)
    # TemplateFlow's CSF map, not brain - GM - WM; its skull masked away; the brain's maximum scaled to 1.
    assert np.allclose(tf.csf[inner], CSF_VALUE, atol=0.02)
    assert not np.allclose(nl.csf[inner], CSF_VALUE, atol=0.02)
    assert 0.9 < tf.t1w.max() <= 1.0 and (tf.t1w[~tf.brain_mask] == 0).all()  # (4 mm: the peak is blurred)
    # The same brain in the same space: the maps agree with nilearn's where both are inside.
    both = tf.brain_mask & nl.brain_mask
    assert (tf.brain_mask != nl.brain_mask).mean() < 0.02
    assert np.corrcoef(tf.t1w[both], nl.t1w[both])[0, 1] > 0.97
    assert template_1mm("templateflow").source == "templateflow"


def test_missing_files_fall_back_to_nilearn_in_one_line(tmp_path, monkeypatch, caplog):
    home = tmp_path / "templateflow"
    _write_home(home, empty={"label-CSF_probseg"})  # the skeleton's 0-byte file: not downloaded
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    caplog.set_level(logging.WARNING, logger="usb_model.template")
    grid = GridConfig(shape=GRID.shape, voxel_size=GRID.voxel_size, template_source="templateflow")
    with pytest.raises(TemplateUnavailable, match="label-CSF_probseg.nii.gz is not downloaded"):
        load_template(grid)  # training's default: no silent change of template
    first = resolve_source("templateflow")
    again = template_1mm("templateflow")  # the graft: falls back, and says so once
    assert first.name == "nilearn" and again.source == "nilearn"
    assert first.record()["Source"] == "nilearn" and first.record()["Requested"] == "TemplateFlow"
    assert "is not downloaded" in first.record()["Fallback"]
    lines = [r.getMessage() for r in caplog.records if r.name == "usb_model.template"]
    assert len(lines) == 1 and "using nilearn's copy" in lines[0] and str(home) in lines[0]
    assert (home / f"tpl-{TEMPLATE_NAME}" / f"tpl-{TEMPLATE_NAME}_res-1_label-CSF_probseg.nii.gz").stat().st_size == 0


def test_no_home_is_not_created_and_not_imported_into(tmp_path, monkeypatch, caplog):
    """An absent home falls back without importing templateflow into it (its import would
    unpack a skeleton there)."""
    home = tmp_path / "nowhere"
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    caplog.set_level(logging.WARNING, logger="usb_model.template")
    source = resolve_source("templateflow")
    assert source.name == "nilearn" and "does not exist" in source.fallback
    assert not home.exists()
    assert resolve_source("nilearn").fallback is None and resolve_source("nilearn").record()["Source"] == "nilearn"
    with pytest.raises(ValueError, match="template source"):
        resolve_source("fsl")


def test_checkpoints_without_a_record_mean_nilearn(tiny_checkpoint, tmp_path, monkeypatch):
    from bids_usb.model import ModelBundle

    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "nowhere"))
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    bundle = ModelBundle.open(tiny_checkpoint)
    assert "template_source" not in config["grid"] or config["grid"]["template_source"] == "nilearn"
    assert bundle.template_source == "nilearn" and bundle.graft_source.name == "nilearn"
    assert bundle.template_record() == {**resolve_source("nilearn").record(), "Checkpoint": "nilearn"}
    # The bundled demo model was trained on nilearn's copy, and its config does not say otherwise.
    demo = ModelBundle.open(None)
    assert demo.template_source == "nilearn"


def test_a_templateflow_checkpoint_names_its_graft_source(tiny_checkpoint, tmp_path, monkeypatch):
    """A checkpoint trained on TemplateFlow's copy grafts from it when it is there, and from
    nilearn's (named as a fallback) when it is not."""
    import shutil

    from bids_usb.model import ModelBundle

    ckpt = tmp_path / "tf_model"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["grid"]["template_source"] = "templateflow"
    (ckpt / "config.json").write_text(json.dumps(config))
    home = tmp_path / "templateflow"
    _write_home(home)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    record = ModelBundle.open(ckpt).template_record()
    assert record["Source"] == "TemplateFlow" and record["Checkpoint"] == "TemplateFlow" and "Fallback" not in record
    _clear_caches()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "nowhere"))
    record = ModelBundle.open(ckpt).template_record()
    assert record["Source"] == "nilearn" and record["Checkpoint"] == "TemplateFlow" and "Fallback" in record
