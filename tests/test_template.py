"""The MNI template on a model grid: shapes, ranges, geometry, caching."""

import nibabel as nib
import numpy as np
import pytest

from usb_model.config import GridConfig
from usb_model.template import Template, grid_affine, load_template, template_brain_centre, template_to_nifti

GRID = GridConfig(shape=(40, 48, 40), voxel_size=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def tpl() -> Template:
    return load_template(GRID)


def test_arrays_on_grid(tpl):
    assert tpl.shape == GRID.shape
    for name in ("t1w", "gm", "wm", "csf"):
        arr = getattr(tpl, name)
        assert arr.shape == GRID.shape and arr.dtype == np.float32
        assert arr.min() >= 0.0 and arr.max() <= 1.0
    assert tpl.brain_mask.dtype == bool
    # The brain fills a plausible volume (MNI brain mask: about 1.9 L).
    litres = tpl.brain_mask.sum() * 64 / 1e6
    assert 1.4 < litres < 2.3
    assert np.all(tpl.t1w[~tpl.brain_mask] == 0)
    total = (tpl.gm + tpl.wm + tpl.csf)[tpl.brain_mask]
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    # T1w contrast: white matter brighter than grey matter brighter than CSF.
    wm = tpl.t1w[tpl.wm > 0.8].mean()
    gm = tpl.t1w[tpl.gm > 0.7].mean()
    csf = tpl.t1w[tpl.csf > 0.8].mean()
    assert wm > gm > csf


def test_affine_is_ras_and_centred(tpl):
    np.testing.assert_allclose(np.diag(tpl.affine)[:3], GRID.voxel_size)
    assert tpl.voxel_size == GRID.voxel_size
    assert nib.aff2axcodes(tpl.affine) == ("R", "A", "S")
    centre_vox = (np.asarray(GRID.shape) - 1) / 2
    np.testing.assert_allclose(nib.affines.apply_affine(tpl.affine, centre_vox), template_brain_centre(), atol=1e-6)
    # The brain's centre of mass is near the grid centre.
    com = np.argwhere(tpl.brain_mask).mean(axis=0)
    assert np.all(np.abs(com - centre_vox) < 3)


def test_cached_and_read_only(tpl):
    assert load_template(GridConfig(shape=list(GRID.shape), voxel_size=list(GRID.voxel_size))) is tpl
    with pytest.raises(ValueError):
        tpl.t1w[0, 0, 0] = 1.0


def test_parenchyma_excludes_csf(tpl):
    par = tpl.parenchyma
    assert par.sum() < tpl.brain_mask.sum()
    assert not np.any(par & ~tpl.brain_mask)


def test_nifti_roundtrip(tpl, tmp_path):
    img = template_to_nifti(tpl)
    path = tmp_path / "t.nii.gz"
    img.to_filename(path)
    back = nib.load(path)
    np.testing.assert_allclose(back.affine, tpl.affine)
    np.testing.assert_allclose(np.asarray(back.dataobj), tpl.t1w)
    with pytest.raises(ValueError):
        template_to_nifti(tpl, np.zeros((3, 3, 3)))


def test_grid_affine_centre():
    aff = grid_affine((10, 10, 10), (2.0, 2.0, 2.0), centre=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(nib.affines.apply_affine(aff, (4.5, 4.5, 4.5)), (1, 2, 3))


def test_invalid_grid():
    with pytest.raises(ValueError):
        load_template(GridConfig(shape=(0, 10, 10), voxel_size=(1.0, 1.0, 1.0)))
