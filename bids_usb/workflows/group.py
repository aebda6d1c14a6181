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
from ..interfaces.group import GridTemplate
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


def init_group_train_wf(
    images: list[TrainImage],
    grid_shape,
    voxel_size,
    work_dir: Path,
    *,
    contrast: str = "T1w",
    skull_stripped: bool = False,
    omp_nthreads: int = 1,
) -> pe.Workflow:
    """One preprocessing sub-workflow per image (``image_<name>_wf``), all registered to the
    template on the training grid (node ``grid_template``)."""
    wf = pe.Workflow(name=WORKFLOW_NAME, base_dir=str(work_dir))
    template = pe.Node(
        GridTemplate(shape=tuple(int(s) for s in grid_shape), voxel_size=tuple(float(v) for v in voxel_size)),
        name="grid_template",
    )
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
        wf.connect(template, "template", pre, "inputnode.template")
    return wf


def model_grid_outputs(graph, images: list[TrainImage]) -> dict[str, dict[str, Any]]:
    """From the finished graph: per image name, its ``to_model_grid`` and ``prepare`` outputs
    (``image``, ``brain_mask``, ``lesion_mask`` when there is one, ``warnings``)."""
    nodes = {node.fullname: node for node in graph.nodes()}
    out: dict[str, dict[str, Any]] = {}
    for image in images:
        prefix = f"{WORKFLOW_NAME}.image_{image.name}_wf."
        grid = nodes[prefix + "to_model_grid"].result.outputs
        prepared = nodes[prefix + "prepare"].result.outputs
        lesion = getattr(grid, "lesion_mask", None)
        out[image.name] = {
            "image": str(grid.image),
            "brain_mask": str(grid.brain_mask),
            "lesion_mask": str(lesion) if lesion and isinstance(lesion, str) else None,
            "warnings": list(prepared.warnings or []),
        }
    return out
