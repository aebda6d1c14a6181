"""N4 on the head: the bias field is fitted on the foreground, and a known smooth field is
recovered from a scan with a noisy background."""

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_usb import preprocessing as prep


def _head(shape=(48, 56, 48), seed=0):
    """A 2 mm "head": an ellipsoid of two tissues with texture, in low-level background noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
    head = r < 1
    tissue = np.where(r < 0.6, 700.0, 500.0) + ndimage.gaussian_filter(rng.normal(0, 60, shape), 1)
    data = np.where(head, tissue, 0.0) + np.abs(rng.normal(0, 15, shape))
    return data.astype(np.float32), head, grid


def test_bias_correct_fits_the_head_and_recovers_a_known_field(monkeypatch):
    # ITK fixes its thread count at its first use in a process; where that is here, one thread, as
    # the app runs it, so that a later in-process registration stays reproducible (test_reliability).
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    data, head, grid = _head()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    field = np.exp(0.25 * grid[0] - 0.15 * grid[1] * grid[2]).astype(np.float32)  # smooth, +-30 %
    _, bias0 = prep.bias_correct(nib.Nifti1Image(data, affine))
    corrected, bias1 = prep.bias_correct(nib.Nifti1Image(data * field, affine))
    ratio = (np.asanyarray(bias1.dataobj) / np.asanyarray(bias0.dataobj))[head]
    ratio /= np.median(ratio / field[head])  # N4's field is defined up to a scale
    error = np.abs(ratio / field[head] - 1)
    assert error.mean() < 0.01, error.mean()
    # corrected * bias is the input, so the edit maps back through the same field
    np.testing.assert_allclose(np.asanyarray(corrected.dataobj) * np.asanyarray(bias1.dataobj), data * field, rtol=1e-4)

    mask = prep.head_mask(prep.to_ants(nib.Nifti1Image(data, affine))).numpy() > 0
    assert mask[head].mean() > 0.9 and mask[~ndimage.binary_dilation(head, iterations=2)].mean() < 0.01


def test_refine_bias_fits_the_brain_and_keeps_a_given_lesion_dark(monkeypatch):
    """The second N4 (on the brain alone) takes out a falloff the head's fit left, multiplies its
    field into the head's, and leaves a given lesion's darkness to the heal: the lesion is not
    part of the fit, so the corrected image keeps its contrast to the tissue around it."""
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    data, head, grid = _head()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lesion = (grid[0] - 0.35) ** 2 + grid[1] ** 2 + (grid[2] - 0.2) ** 2 < 0.25**2
    lesion &= head
    truth = np.where(lesion, 0.5 * data, data)
    falloff = np.exp(0.2 * grid[2]).astype(np.float32)  # the inferior brain 20 % darker
    head_bias = np.full(data.shape, 1.3, np.float32)
    img = nib.Nifti1Image(truth * falloff, affine)
    brain = nib.Nifti1Image(head.astype(np.uint8), affine)
    given = nib.Nifti1Image(lesion.astype(np.uint8), affine)
    corrected, combined = prep.refine_bias(img, nib.Nifti1Image(head_bias, affine), brain, given)
    out = np.asanyarray(corrected.dataobj)
    # image = corrected x field, with the head's field inside the combined one
    np.testing.assert_allclose(out * np.asanyarray(combined.dataobj) / 1.3, truth * falloff, rtol=1e-4)
    healthy = head & ~ndimage.binary_dilation(lesion, iterations=2)
    ratio = out[healthy] / truth[healthy]
    before = falloff[healthy] / np.median(falloff[healthy])
    assert np.std(ratio / np.median(ratio)) < 0.5 * np.std(before)  # the falloff is mostly gone
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1) & head
    contrast = out[lesion].mean() / out[ring].mean()
    assert abs(contrast / (truth[lesion].mean() / truth[ring].mean()) - 1) < 0.05
    # too little brain left beside the lesion: nothing to fit, the head's correction stands
    same, field = prep.refine_bias(img, nib.Nifti1Image(head_bias, affine), brain, brain)
    assert same is img and np.all(np.asanyarray(field.dataobj) == 1.3)
