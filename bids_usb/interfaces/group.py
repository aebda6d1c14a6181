"""Interfaces of the group level (training): the template comes from a config's grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _GridTemplateInputSpec(BaseInterfaceInputSpec):
    shape = traits.Tuple(traits.Int, traits.Int, traits.Int, mandatory=True, desc="the model grid's shape")
    voxel_size = traits.Tuple(traits.Float, traits.Float, traits.Float, mandatory=True, desc="its voxel size (mm)")
    template_source = traits.Enum(
        "nilearn", "templateflow", usedefault=True, desc="the copy of the template (the config's grid.template_source)"
    )


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

        grid = GridConfig(
            shape=tuple(self.inputs.shape),
            voxel_size=tuple(self.inputs.voxel_size),
            template_source=self.inputs.template_source,
        )
        template = load_template(grid)
        img = grid_nifti(template.t1w, template.affine)
        mask = grid_nifti(np.asarray(template.brain_mask) > 0.5, template.affine, np.uint8)
        self._results["template"] = str(Path(runtime.cwd) / "template.nii.gz")
        self._results["template_mask"] = str(Path(runtime.cwd) / "template_mask.nii.gz")
        nib.save(img, self._results["template"])
        nib.save(mask, self._results["template_mask"])
        return runtime


class _ArraysInputSpec(BaseInterfaceInputSpec):
    image = File(exists=True, desc="the normalised brain on the training grid (healthy images)")
    lesion_mask = File(exists=True, desc="the lesion on the training grid (lesioned participants)")
    healthy = traits.Bool(mandatory=True, desc="True: the brain is a training image; False: only its lesion is used")
    out_dir = Directory(mandatory=True, desc="where the training arrays of this grid are kept")
    name = traits.Str(mandatory=True)


class _ArraysOutputSpec(TraitedSpec):
    array = File(desc="<out_dir>/<name>.npy (healthy) or <name>_lesion.npy (a lesion with voxels left)")


class TrainingArray(SimpleInterface):
    """The training volume of one image as an uncompressed float32 ``.npy`` at a known path
    (``<out_dir>/<name>.npy``, or ``<name>_lesion.npy`` for a lesion shape prior): every rank and
    DataLoader worker memory-maps it, so a cohort is held once in the page cache. The group
    level reads these paths after the run; it never reads the executed graph. A lesion that left
    no voxel on the grid writes nothing."""

    input_spec = _ArraysInputSpec
    output_spec = _ArraysOutputSpec

    def _run_interface(self, runtime):
        import os

        i = self.inputs
        out_dir = Path(i.out_dir)
        if i.healthy:
            source, target, binary = i.image, out_dir / f"{i.name}.npy", False
        elif isdefined(i.lesion_mask):
            source, target, binary = i.lesion_mask, out_dir / f"{i.name}_lesion.npy", True
        else:
            return runtime
        data = np.asarray(nib.load(str(source)).dataobj, dtype=np.float32)
        if binary:
            data = (data > 0.5).astype(np.float32)
            if not data.any():
                target.unlink(missing_ok=True)
                return runtime
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, data)
        os.replace(tmp, target)
        self._results["array"] = str(target)
        return runtime
