"""The USB edit (heal or embed) on the model grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    isdefined,
    traits,
)

from ..editing import generate_lesion, run_edit
from ..model import ModelBundle
from .base import TimedInterface, TimedOutputSpec


class _USBInputSpec(BaseInterfaceInputSpec):
    image = File(exists=True, mandatory=True, desc="normalised brain on the model grid")
    lesion_mask = File(exists=True, desc="heal: the known lesion; embed: the lesion to draw (model grid)")
    given_mask = File(exists=True, desc="heal: the lesion mask as given, when lesion_mask is it grown (model grid)")
    model_dir = Directory(exists=True, mandatory=True)
    model_fingerprint = traits.Str(
        desc="ModelBundle.fingerprint: a model changed in place is not reused from the work directory"
    )
    task = traits.Enum("heal", "embed", mandatory=True)
    params = traits.Dict(desc="sampling parameters (SamplingConfig names); missing ones take the checkpoint's defaults")
    seed = traits.Int(0, usedefault=True)
    n_samples = traits.Int(1, usedefault=True)
    device = traits.Str("auto", usedefault=True)
    generate_lesion = traits.Bool(
        False, usedefault=True, desc="embed --lesion-from generate: propose this brain's lesion, then draw it"
    )
    brain_mask = File(exists=True, desc="generate_lesion: the brain on the model grid (the lesion is cut to it)")


class _USBOutputSpec(TimedOutputSpec):
    edited = File(exists=True, desc="the edited brain on the model grid, [0, 1]")
    uncertainty = File(desc="voxelwise std over samples (only when n_samples > 1)")
    lesion_mask = File(desc="the lesion mask used, on the model grid")
    healed = File(desc="heal: the decoded healed brain, intensities matched to the input (model grid)")
    change = File(desc="heal: decode(healed) - decode(input) on the model grid")
    fill_change = File(desc="heal with fill_residual: healed - decode(filled), the model's change to the fill")
    anomaly = File(desc="heal without a mask: the anomaly map on the model grid")
    detected = File(desc="heal without a mask: the detected lesion on the model grid (absent when nothing was found)")
    parameters = traits.Dict(desc="every parameter the sampler used, for the sidecars")


class RunUSB(TimedInterface):
    input_spec = _USBInputSpec
    output_spec = _USBOutputSpec

    def _run_interface(self, runtime):
        import json
        import os

        import torch

        from usb_model.costs import CostLog

        # --omp-nthreads reaches this worker through OMP_NUM_THREADS (set by bids_usb.run); a
        # forked worker keeps its parent's thread pool, so apply it explicitly.
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
        image = nib.load(self.inputs.image)
        lesion = None
        if isdefined(self.inputs.lesion_mask):
            lesion = np.asanyarray(nib.load(self.inputs.lesion_mask).dataobj) > 0
        bundle = ModelBundle.open(self.inputs.model_dir)
        params = dict(self.inputs.params) if isdefined(self.inputs.params) else {}
        generated = None
        if self.inputs.generate_lesion:
            brain = (
                np.asanyarray(nib.load(self.inputs.brain_mask).dataobj) > 0
                if isdefined(self.inputs.brain_mask)
                else None
            )
            lesion, generated = generate_lesion(
                bundle,
                np.asanyarray(image.dataobj, dtype=np.float32),
                brain,
                seed=self.inputs.seed,
                device=self.inputs.device,
            )
        costs = CostLog()
        result, used = run_edit(
            bundle,
            self.inputs.task,
            np.asanyarray(image.dataobj, dtype=np.float32),
            lesion,
            params,
            seed=self.inputs.seed,
            n_samples=self.inputs.n_samples,
            device=self.inputs.device,
            costs=costs,
            given=np.asanyarray(nib.load(self.inputs.given_mask).dataobj) > 0
            if isdefined(self.inputs.given_mask)
            else None,
        )
        cwd = Path(runtime.cwd)
        summary = {
            **costs.summary(),
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
        }
        # Not an output (nipype would delete it as unconnected): the node's folder keeps it.
        (cwd / "usb_costs.json").write_text(json.dumps(summary, indent=2) + "\n")

        def save(name: str, data, dtype=np.float32) -> str:
            img = nib.Nifti1Image(np.asarray(data).astype(dtype), image.affine)
            img.set_data_dtype(dtype)
            nib.save(img, str(cwd / f"{name}.nii.gz"))
            return str(cwd / f"{name}.nii.gz")

        self._results["edited"] = save("edited_model", result.image.numpy())
        if result.std is not None:
            self._results["uncertainty"] = save("uncertainty_model", result.std.numpy())
        if generated is not None:
            self._results["lesion_mask"] = save("lesion_generated_model", lesion, np.uint8)
            used = {**used, "generated_lesion": generated}
        elif lesion is not None:
            self._results["lesion_mask"] = self.inputs.lesion_mask
        if result.healed is not None:
            self._results["healed"] = save("healed_model", result.healed.numpy())
            self._results["change"] = save("change_model", result.change.numpy())
        if result.fill_change is not None:
            self._results["fill_change"] = save("fill_change_model", result.fill_change.numpy())
        if result.anomaly is not None:
            self._results["anomaly"] = save("anomaly_model", result.anomaly.numpy())
            if result.lesion is not None and bool(result.lesion.any()):
                self._results["detected"] = save("detected_model", result.lesion.numpy() > 0, np.uint8)
        self._results["parameters"] = used
        return runtime
