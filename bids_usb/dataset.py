"""The input dataset of a run: validated, then its images selected (both levels)."""

from __future__ import annotations

from pathlib import Path

from . import directories, discovery
from .bids_filter import load_bids_filter
from .config import RunConfig


def validate_dataset(bids_dir: Path, config: RunConfig) -> None:
    """The cheap dataset checks and bids-validator-deno, unless --skip-bids-validation.

    The raw-dataset lesion masks the app reads (``discovery.RAW_MASK_GLOBS``: fMRIPrep's
    ``_label-lesion_roi``, ATLAS-style ``_desc-T1lesion_mask``) are expected files, not errors.
    """
    if config.execution.skip_bids_validation:
        return
    from .validation import validate_or_raise

    directories.dataset_check(bids_dir)
    validate_or_raise(bids_dir, expected=discovery.RAW_MASK_GLOBS)


def collect(bids_dir: Path, config: RunConfig, contrast: str) -> discovery.CollectResult:
    """pybids discovery with the selection options every level shares (the shared index of
    --bids-database-dir where given)."""
    execution = config.execution
    bids_filter = load_bids_filter(execution.bids_filter_file) if execution.bids_filter_file else None
    database_dir = None
    if execution.bids_database_dir is not None:
        from .database import check_database_dir

        database_dir = check_database_dir(bids_dir, execution.bids_database_dir)
    return discovery.collect_inputs(
        bids_dir,
        participant_labels=execution.participant_labels,
        session_labels=execution.session_labels,
        bids_filter=bids_filter,
        contrast=contrast,
        lesion_masks_dir=config.workflow.lesion_masks,
        database_dir=database_dir,
    )
