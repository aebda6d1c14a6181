"""The USB edit (heal or embed) on the model grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File, SimpleInterface, TraitedSpec, isdefined, traits

from ..editing import run_edit
from ..model import ModelBundle


class _USBInputSpec(BaseInterfaceInputSpec):
    image = File(exists=True, mandatory=True, desc="normalised brain on the model grid")
    lesion_mask = File(exists=True, desc="heal: the known lesion; embed: the lesion to draw (model grid)")
    model_dir = Directory(exists=True, mandatory=True)
    task = traits.Enum("heal", "embed", mandatory=True)
    params = traits.Dict(desc="sampling parameters (SamplingConfig names); missing ones take the checkpoint's defaults")
    seed = traits.Int(0, usedefault=True)
    n_samples = traits.Int(1, usedefault=True)
    device = traits.Str("auto", usedefault=True)


class _USBOutputSpec(TraitedSpec):
    edited = File(exists=True, desc="the edited brain on the model grid, [0, 1]")
    uncertainty = File(desc="voxelwise std over samples (only when n_samples > 1)")
    lesion_mask = File(desc="the lesion mask used, on the model grid")
    parameters = traits.Dict(desc="every parameter the sampler used, for the sidecars")


class RunUSB(SimpleInterface):
    input_spec = _USBInputSpec
    output_spec = _USBOutputSpec

    def _run_interface(self, runtime):
        import os

        import torch

        # --omp-nthreads reaches this worker through OMP_NUM_THREADS (set by bids_usb.run); a
        # forked worker keeps its parent's thread pool, so apply it explicitly.
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
        image = nib.load(self.inputs.image)
        lesion = None
        if isdefined(self.inputs.lesion_mask):
            lesion = np.asanyarray(nib.load(self.inputs.lesion_mask).dataobj) > 0
        bundle = ModelBundle.open(self.inputs.model_dir)
        params = dict(self.inputs.params) if isdefined(self.inputs.params) else {}
        result, used = run_edit(
            bundle,
            self.inputs.task,
            np.asanyarray(image.dataobj, dtype=np.float32),
            lesion,
            params,
            seed=self.inputs.seed,
            n_samples=self.inputs.n_samples,
            device=self.inputs.device,
        )
        cwd = Path(runtime.cwd)
        out = nib.Nifti1Image(result.image.numpy().astype(np.float32), image.affine)
        nib.save(out, str(cwd / "edited_model.nii.gz"))
        self._results["edited"] = str(cwd / "edited_model.nii.gz")
        if result.std is not None:
            nib.save(nib.Nifti1Image(result.std.numpy().astype(np.float32), image.affine), str(cwd / "uncertainty_model.nii.gz"))
            self._results["uncertainty"] = str(cwd / "uncertainty_model.nii.gz")
        if lesion is not None:
            self._results["lesion_mask"] = self.inputs.lesion_mask
        self._results["parameters"] = used
        return runtime
