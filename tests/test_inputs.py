"""Bad input, caught before any work: each case gets one clear error naming the file."""

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from bids_usb.errors import DataError
from bids_usb.images import load_image
from bids_usb.inputs import prepare_inputs


def _head(shape=(30, 34, 30)):
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return ((zz**2 + yy**2 + xx**2) < 0.8).astype(np.float32) * 500


def _save(tmp_path, name, data, affine=None, dtype=None):
    img = nib.Nifti1Image(
        data if dtype is None else data.astype(dtype), np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    )
    path = tmp_path / name
    nib.save(img, str(path))
    return path


@pytest.fixture()
def anat(tmp_path):
    return _save(tmp_path, "sub-01_T1w.nii.gz", _head(), dtype=np.int16)


def _mask(shape=(30, 34, 30)):
    m = np.zeros(shape, np.uint8)
    m[12:16, 14:18, 12:16] = 1
    return m


def test_mask_on_the_same_grid_is_used_as_is(tmp_path, anat):
    mask = _save(tmp_path, "sub-01_label-lesion_roi.nii.gz", _mask())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepared = prepare_inputs(anat, mask, "heal")
    assert np.array_equal(np.asanyarray(prepared.lesion.dataobj), _mask())


def test_mask_on_another_grid_of_the_same_space_is_resampled(tmp_path, anat):
    fine = np.zeros((60, 68, 60), np.uint8)
    fine[24:32, 28:36, 24:32] = 1
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -0.5  # voxel centres of a 1 mm grid inside the same 2 mm field of view
    mask = _save(tmp_path, "sub-01_label-lesion_roi.nii.gz", fine, affine)
    with pytest.warns(UserWarning, match="another grid"):
        prepared = prepare_inputs(anat, mask, "heal")
    assert prepared.lesion.shape == (30, 34, 30)
    assert 30 <= np.asanyarray(prepared.lesion.dataobj).sum() <= 100


def test_mask_of_another_space_is_refused(tmp_path, anat):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [300, 300, 300]
    mask = _save(tmp_path, "sub-01_label-lesion_roi.nii.gz", _mask(), affine)
    with pytest.raises(DataError, match="another space"):
        prepare_inputs(anat, mask, "heal")
    named = _save(tmp_path, "sub-01_space-MNI152NLin2009aSym_label-lesion_roi.nii.gz", _mask())
    with pytest.raises(DataError, match="space MNI152NLin2009aSym"):
        prepare_inputs(anat, named, "heal")


def test_empty_mask_heals_unmasked_but_cannot_embed(tmp_path, anat):
    mask = _save(tmp_path, "sub-01_label-lesion_roi.nii.gz", np.zeros((30, 34, 30), np.uint8))
    with pytest.warns(UserWarning, match="empty"):
        prepared = prepare_inputs(anat, mask, "heal")
    assert prepared.lesion is None
    with pytest.raises(DataError, match="empty"):
        prepare_inputs(anat, mask, "embed")


def test_non_binary_mask_is_thresholded(tmp_path, anat):
    soft = _mask().astype(np.float32) * 0.8
    soft[0, 0, 0] = 0.3
    mask = _save(tmp_path, "sub-01_label-lesion_roi.nii.gz", soft)
    with pytest.warns(UserWarning, match="not binary"):
        prepared = prepare_inputs(anat, mask, "heal")
    assert np.array_equal(np.asanyarray(prepared.lesion.dataobj), _mask())


def test_4d_nan_and_corrupt_images_are_refused(tmp_path):
    four_d = _save(tmp_path, "a_T1w.nii.gz", np.stack([_head()] * 3, axis=-1))
    with pytest.raises(DataError, match="3D volume"):
        load_image(four_d)
    single = _save(tmp_path, "b_T1w.nii.gz", _head()[..., None])
    assert load_image(single).shape == (30, 34, 30)  # a trailing singleton volume is fine
    bad = _head()
    bad[3, 3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        load_image(_save(tmp_path, "c_T1w.nii.gz", bad))
    whole = _save(tmp_path, "d_T1w.nii.gz", _head())
    data = whole.read_bytes()
    truncated = tmp_path / "e_T1w.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_image(truncated)
    raw = tmp_path / "f_T1w.nii"
    raw.write_bytes(gzip.decompress(data)[:400])
    with pytest.raises(DataError, match=r"f_T1w\.nii"):
        load_image(raw)
