"""The group level's preprocessing workflow (``--group-task train``).

    grid_template (the MNI template on the config's grid)
      -> for every image: init_preprocess_wf (prepare -> N4 -> skull strip -> register ->
         model grid), exactly the participant level's chain

Nothing is written to the output directory here: the model-grid brains (and the lesion masks of
lesioned participants) stay in the work directory, where nipype caches them, and the training
reads them from there. A second ``train`` run (more steps, another preset with the same grid)
finds every node cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nipype.pipeline import engine as pe

from ..images import node_name
from ..interfaces.group import GridTemplate, TrainingArray
from .participant import init_preprocess_wf

WORKFLOW_NAME = "bids_usb_group_wf"


@dataclass
class TrainImage:
    """One anatomical image of the training cohort; ``lesion_mask`` marks a lesioned one."""

    anat: Path
    entities: dict[str, Any] = field(default_factory=dict)
    suffix: str = "T1w"
    lesion_mask: Path | None = None
    healthy: bool = True  # False: its participant has a lesion mask; only the mask is used

    @property
    def name(self) -> str:
        return node_name(self.anat)


def arrays_dir(work_dir: Path, grid_shape, voxel_size, template_source: str = "nilearn") -> Path:
    """Where the training arrays of one grid (and copy of the template) are kept (inside the
    work directory)."""
    grid = "x".join(str(int(s)) for s in grid_shape) + "_" + "x".join(f"{float(v):g}" for v in voxel_size) + "mm"
    if template_source != "nilearn":  # registered to another copy; nilearn's keep their old folder
        grid += f"_{template_source}"
    return Path(work_dir) / "bids_usb_group_arrays" / grid


def init_group_train_wf(
    images: list[TrainImage],
    grid_shape,
    voxel_size,
    work_dir: Path,
    *,
    contrast: str = "T1w",
    skull_stripped: bool = False,
    omp_nthreads: int = 1,
    template_source: str = "nilearn",
) -> pe.Workflow:
    """One preprocessing sub-workflow per image (``image_<name>_wf``), all registered to the
    template on the training grid (node ``grid_template``), each ending in a ``TrainingArray``
    node that writes its volume to ``arrays_dir(...)/<name>.npy`` (or ``<name>_lesion.npy``)."""
    wf = pe.Workflow(name=WORKFLOW_NAME, base_dir=str(work_dir))
    template = pe.Node(
        GridTemplate(
            shape=tuple(int(s) for s in grid_shape),
            voxel_size=tuple(float(v) for v in voxel_size),
            template_source=template_source,
        ),
        name="grid_template",
    )
    out_dir = arrays_dir(work_dir, grid_shape, voxel_size, template_source)
    for image in images:
        pre = init_preprocess_wf(
            image.anat,
            lesion_mask=image.lesion_mask,
            task="heal",
            contrast=contrast,
            skull_stripped=skull_stripped,
            omp_nthreads=omp_nthreads,
            name=f"image_{image.name}_wf",
        )
        array = pe.Node(
            TrainingArray(healthy=image.healthy, out_dir=str(out_dir), name=image.name),
            name=f"array_{image.name}",
            overwrite=True,  # cheap, and the file must exist whenever the run says it does
        )
        wf.connect(template, "template", pre, "inputnode.template")
        wf.connect(pre, "outputnode.image", array, "image")
        if image.lesion_mask is not None:
            wf.connect(pre, "outputnode.lesion_model", array, "lesion_mask")
    return wf
