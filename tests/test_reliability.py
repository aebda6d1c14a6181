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
