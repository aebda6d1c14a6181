"""The native composite of a heal: the healed fill inside the lesion, the decoded change in the
band, the input's own voxels beyond it; intensities back in the scanner's units."""

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_usb import preprocessing as prep
from bids_usb.native import to_native_edit


def _scan(tmp_path, seed: int):
    """A 3 mm int16 scan, an identity registration to the model grid, and a cubic lesion."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    shape = (20, 20, 20)
    original_data = np.random.default_rng(seed).integers(400, 600, size=shape).astype(np.int16)
    original = nib.Nifti1Image(original_data, affine)
    original.set_data_dtype(np.int16)
    identity = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    ants.write_transform(identity, str(tmp_path / "identity.mat"))
    lesion = np.zeros(shape, bool)
    lesion[8:12, 8:12, 8:12] = True
    return affine, shape, original_data, original, prep.Registration(tmp_path / "identity.mat"), lesion


def test_heal_composite_on_the_native_grid(tmp_path):
    affine, shape, original_data, original, reg, lesion = _scan(tmp_path, seed=0)
    scale, bias = 1000.0, nib.Nifti1Image(np.full(shape, 0.5, np.float32), affine)
    healed = nib.Nifti1Image(np.full(shape, 0.8, np.float32), affine)  # the fill, normalised
    change = nib.Nifti1Image(np.full(shape, 0.02, np.float32), affine)  # decode(healed) - decode(input)
    model_input = nib.Nifti1Image(np.zeros(shape, np.float32), affine)  # not used when healing
    edit = to_native_edit(
        original,
        healed,
        model_input,
        reg,
        scale,
        bias,
        lesion,
        healed_model=healed,
        change_model=change,
        band_mm=(0.0, 6.0),
    )
    out = np.asanyarray(edit.image.dataobj)
    region = np.asanyarray(edit.region.dataobj) > 0
    assert out.dtype == np.int16 and out.shape == shape
    assert np.all(out[lesion] == 400)  # 0.8 * scale * bias
    band = region & ~lesion
    assert band.any()
    expected = original_data[band] + np.rint(0.02 * scale * 0.5 * edit.weight[band]).astype(np.int16)
    assert np.all(np.abs(out[band].astype(int) - expected) <= 1)  # the input's detail, plus the change
    assert np.array_equal(out[~region], original_data[~region])


def test_fill_residual_puts_the_native_fill_plus_the_models_change_in_the_lesion(tmp_path):
    """--fill-residual: the lesion holds the fill made on the scan's own grid (its detail) plus
    the model's change to the fill, in scanner units; the band and the outside are as without it."""
    affine, shape, original_data, original, reg, lesion = _scan(tmp_path, seed=1)
    fill = np.where(lesion, 500.0 + np.arange(lesion.size).reshape(shape) % 7, original_data).astype(np.float32)
    scale, bias = 1000.0, nib.Nifti1Image(np.full(shape, 0.5, np.float32), affine)
    flat = nib.Nifti1Image(np.full(shape, 0.8, np.float32), affine)
    fill_change = nib.Nifti1Image(np.full(shape, -0.01, np.float32), affine)
    common = dict(healed_model=flat, change_model=nib.Nifti1Image(np.zeros(shape, np.float32), affine))
    args = (original, flat, nib.Nifti1Image(np.zeros(shape, np.float32), affine), reg, scale, bias, lesion)
    plain = to_native_edit(*args, **common, band_mm=(0.0, 6.0))
    residual = to_native_edit(*args, **common, fill_native=fill, fill_change_model=fill_change, band_mm=(0.0, 6.0))
    out = np.asanyarray(residual.image.dataobj)
    # fill + change, bounded by the fill's range over each voxel's 3^3 neighbourhood
    lo = ndimage.minimum_filter(fill, size=3)  # the change lowers: only the lower bound can bite
    shifted = fill - 0.01 * scale * 0.5
    within = lesion & (shifted >= lo)
    assert within.any() and (lesion & ~within).any()
    assert np.array_equal(out[within], np.rint(shifted[within]).astype(np.int16))  # the change, on the fill's detail
    assert np.array_equal(out[lesion & ~within], np.rint(lo[lesion & ~within]).astype(np.int16))  # bounded
    assert len(np.unique(out[lesion])) > 3  # the detail is kept
    assert np.all(np.asanyarray(plain.image.dataobj)[lesion] == 400)  # the healed brain, flat
    assert np.array_equal(out[~lesion], np.asanyarray(plain.image.dataobj)[~lesion])
