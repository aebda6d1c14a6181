"""Interfaces of the group level (training): the template comes from a config's grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)


class _GridTemplateInputSpec(BaseInterfaceInputSpec):
    shape = traits.Tuple(traits.Int, traits.Int, traits.Int, mandatory=True, desc="the model grid's shape")
    voxel_size = traits.Tuple(traits.Float, traits.Float, traits.Float, mandatory=True, desc="its voxel size (mm)")


class _GridTemplateOutputSpec(TraitedSpec):
    template = File(exists=True, desc="the MNI ICBM 2009a T1w on the grid, [0, 1], brain only")
    template_mask = File(exists=True)


class GridTemplate(SimpleInterface):
    """The MNI template on a model grid (``usb_model.template.load_template``) as NIfTI files.

    Training has no checkpoint yet, so the participants are registered to the template the
    new checkpoint will carry (the trainer saves ``load_template(cfg.grid)`` with it). The
    files are written as ``ModelBundle.template_image``/``template_mask`` write a checkpoint's.
    """

    input_spec = _GridTemplateInputSpec
    output_spec = _GridTemplateOutputSpec

    def _run_interface(self, runtime):
        from usb_model.config import GridConfig
        from usb_model.template import grid_nifti, load_template

        grid = GridConfig(shape=tuple(self.inputs.shape), voxel_size=tuple(self.inputs.voxel_size))
        template = load_template(grid)
        img = grid_nifti(template.t1w, template.affine)
        mask = grid_nifti(np.asarray(template.brain_mask) > 0.5, template.affine, np.uint8)
        self._results["template"] = str(Path(runtime.cwd) / "template.nii.gz")
        self._results["template_mask"] = str(Path(runtime.cwd) / "template_mask.nii.gz")
        nib.save(img, self._results["template"])
        nib.save(mask, self._results["template_mask"])
        return runtime
