"""Reproducible registration, data errors raised inside the workflow, and the brain-coverage check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_usb import preprocessing as prep
from bids_usb.errors import DataError


def _blob(shift=0.0):
    """A smooth, asymmetric 'brain' on a 2 mm grid (registration has something to fit)."""
    zz, yy, xx = np.meshgrid(*(np.arange(32, dtype=np.float32),) * 3, indexing="ij")
    data = np.exp(-(((xx - 16 - shift) / 7) ** 2 + ((yy - 15) / 9) ** 2 + ((zz - 17) / 6) ** 2))
    data += 0.5 * np.exp(-(((xx - 10) / 3) ** 2 + ((yy - 20) / 3) ** 2 + ((zz - 12) / 3) ** 2))
    return nib.Nifti1Image((data * 100).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def test_the_same_seed_gives_the_same_affine(tmp_path):
    """ANTs samples the metric at random; unseeded it takes the clock, so reruns (and resumed runs)
    gave different affines. With the run's seed the transform file is identical."""
    template, brain = _blob(), _blob(shift=1.5)
    for seed in (0, 7):  # 0, the default, included: ANTs itself reads a seed of 0 as "use the clock"
        a = prep.register_to_template(brain, template, None, tmp_path / f"a{seed}", seed=seed)
        b = prep.register_to_template(brain, template, None, tmp_path / f"b{seed}", seed=seed)
        assert a.transform.read_bytes() == b.transform.read_bytes()


def test_a_lesion_covering_most_of_the_brain_is_a_data_error():
    brain = np.zeros((10, 10, 10), np.uint8)
    brain[2:8, 2:8, 2:8] = 1
    lesion = np.zeros_like(brain)
    lesion[2:8, 2:8, 2:6] = 1  # two thirds of the brain
    with pytest.raises(DataError, match="covers 67% of the brain"):
        prep.cost_mask(nib.Nifti1Image(brain, np.eye(4)), nib.Nifti1Image(lesion, np.eye(4)))
    lesion[:] = 0
    lesion[4:6, 4:6, 4:6] = 1
    cost = prep.cost_mask(nib.Nifti1Image(brain, np.eye(4)), nib.Nifti1Image(lesion, np.eye(4)))
    assert 0 < np.asanyarray(cost.dataobj).sum() < brain.sum()


def _fails_with_data_error():
    from bids_usb.errors import DataError

    raise DataError("the lesion mask covers 90% of the brain found by skull stripping; check the mask")


def _crashes():
    raise ZeroDivisionError("a genuine bug")


@pytest.mark.parametrize("function,expected", [(_fails_with_data_error, 1), (_crashes, 0)])
def test_a_data_error_inside_a_node_is_found_in_its_crash_file(tmp_path, function, expected):
    """The participant level reads the crash files of this run: a DataError becomes exit 65 with
    its own line (prefixed with the image), a genuine crash keeps the crash-file message."""
    import time
    from pathlib import Path

    from nipype import config
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    from bids_usb.run import node_data_errors
    from bids_usb.workflows.participant import ImageJob

    crashes = tmp_path / "crashes"
    config.set("execution", "crashdump_dir", str(crashes))
    config.set("execution", "crashfile_format", "txt")
    job = ImageJob(anat=Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), entities={"subject": "01"})
    inner = pe.Workflow(name=f"image_{job.name}_wf")
    inner.add_nodes([pe.Node(Function(function=function, input_names=[], output_names=[]), name="register")])
    outer = pe.Workflow(name="bids_usb_wf", base_dir=str(tmp_path / "work"))
    outer.add_nodes([inner])
    started = time.time()
    with pytest.raises(RuntimeError):
        outer.run(plugin="Linear")
    messages = node_data_errors(crashes, started, [job])
    assert len(messages) == expected
    if expected:
        assert messages[0].startswith(f"{job.anat}: the lesion mask covers 90%")


def _mni_brain_4mm():
    """nilearn's MNI brain at 4 mm: a real brain's structure, small enough for a fit in seconds. A
    smooth blob is not enough here: its affine fits land anywhere between 0.67 and 0.97 brain
    overlap with the seed and the metric's sampling (2026-12-07)."""
    from nilearn import datasets, image

    t1 = image.resample_img(
        datasets.load_mni152_template(resolution=2),
        target_affine=np.diag([4.0, 4.0, 4.0]),
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    )
    mask = image.resample_to_img(
        datasets.load_mni152_brain_mask(resolution=2),
        t1,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    brain = np.where(mask.get_fdata() > 0.5, t1.get_fdata(), 0.0) * 100.0
    return nib.Nifti1Image(brain.astype(np.float32), t1.affine)


def _tilted(img):
    """``img`` tilted by 20 degrees about one axis and moved by 8 mm: still a fit ANTs' usual start finds."""
    from scipy import ndimage

    data = np.asanyarray(img.dataobj)
    moved = ndimage.shift(ndimage.rotate(data, 20, axes=(0, 2), reshape=False, order=1), (2, 0, 0), order=1)
    return nib.Nifti1Image(np.where(moved > 0.05 * data.max(), moved, 0).astype(np.float32), img.affine)


def test_a_good_fit_keeps_the_usual_start_and_a_poor_one_is_refitted_from_a_rotation_search(tmp_path, monkeypatch):
    """Where the centre-of-mass start lands the brain well on the template, nothing else runs; where
    it does not (here forced by an unreachable bar), the rotation search runs too, the better
    overlap is kept, and both are reproducible."""
    template = _mni_brain_4mm()
    brain = _tilted(template)
    usual = prep._register(brain, template, None, tmp_path / "usual", 0)
    assert usual.initialisation == "centre of mass" and usual.overlap >= prep.REGISTRATION_OVERLAP_OK
    assert not (tmp_path / "usual" / "rotation_search.mat").exists()

    monkeypatch.setattr(prep, "REGISTRATION_OVERLAP_OK", 1.01)
    best = prep._register(brain, template, None, tmp_path / "forced", 0)
    assert (tmp_path / "forced" / "rotation_search.mat").is_file()
    assert best.overlap >= usual.overlap - 1e-9  # the better of the two fits
    again = prep._register(brain, template, None, tmp_path / "again", 0)
    assert again.initialisation == best.initialisation
    assert again.transform.read_bytes() == best.transform.read_bytes()
