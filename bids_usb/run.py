"""The participant level, from parsed options to an exit code.

Checks that are cheap and can fail (paths, validation, the model, discovery, each image and
mask) run here in the main process, before any workflow is built, so that they end with the
right exit code and one clear line. Images that fail their checks are reported and skipped;
the others still run, and the exit code then tells the first kind of failure met.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

from . import storage
from .config import GENERATE_LESION, RunConfig
from .dataset import collect, validate_dataset
from .errors import BidsUsbError, DataError, NoInput, NothingSelected, UsageError
from .locks import WorkLock
from .progress import NodeProgress, count_nodes

log = logging.getLogger("bids_usb")


def run_participant(config: RunConfig) -> int:
    from . import directories
    from .model import ModelBundle

    bids_dir: Path = config.execution.bids_dir
    if not bids_dir.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory; give the root folder of a BIDS dataset")
    bids_dir = bids_dir.resolve()
    output_dir: Path = config.execution.output_dir.absolute()
    directories.check_output_dir(bids_dir, output_dir)
    directories.check_output_dataset(output_dir)
    work_dir = config.execution.resolved_work_dir(output_dir)
    directories.check_work_dir(bids_dir, work_dir)
    bundle = ModelBundle.open(config.workflow.model)
    _check_t_start(config, bundle)
    created = directories.create_dir(output_dir, "output_dir")
    try:
        created += directories.create_dir(work_dir, "work directory")
        jobs, failures, donor = _checked_jobs(bids_dir, config, bundle, work_dir)
        lock = WorkLock.acquire(work_dir, [job.entities["subject"] for job in jobs])
    except BaseException:
        directories.remove_empty_dirs(created)  # a run refused up front leaves nothing behind
        raise
    with lock:
        storage.warn_if_short([output_dir, work_dir], storage.needed_mb(_voxels(job.anat) for job in jobs))
        watch = storage.DiskWatch([output_dir, work_dir])
        try:
            with watch:
                return _run_jobs(jobs, failures, donor, bids_dir, output_dir, work_dir, bundle, config)
        except OSError as exc:
            if storage.is_disk_full(exc):
                raise storage.disk_full_error(Path(exc.filename).parent if exc.filename else work_dir, exc) from exc
            raise
        except KeyboardInterrupt as exc:  # Interrupted: the disk watch's SIGTERM, or the user's
            if watch.full is not None:
                raise storage.disk_full_error(watch.full) from exc
            raise


def _check_t_start(config: RunConfig, bundle) -> None:
    """--t-start beyond the model's noise schedule is refused now, not after preprocessing."""
    t_start = config.workflow.sampling.t_start
    limit = bundle.config.schedule.num_train_timesteps
    if t_start is not None and t_start >= limit:
        raise UsageError(f"--t-start {t_start} is beyond this model's noise schedule; give 1..{limit - 1}")


def _voxels(path: Path) -> int:
    import nibabel as nib
    import numpy as np

    return int(np.prod(nib.load(str(path)).shape[:3]))


def _checked_jobs(bids_dir: Path, config: RunConfig, bundle, work_dir: Path):
    """Validation, discovery and every per-image check, in the main process: the jobs that
    passed, and one error per image that did not (reported, the others still run)."""
    from .inputs import prepare_inputs
    from .workflows.participant import ImageJob

    storage.check_dataset_links(bids_dir, config.execution.participant_labels)
    validate_dataset(bids_dir, config)
    task = config.workflow.task
    orientation = config.workflow.assume_orientation
    mask_orientation = config.workflow.mask_orientation
    collected = collect(bids_dir, config, bundle.contrast)
    failures: list[BidsUsbError] = []
    for subject in collected.missing:
        failures.append(
            NoInput(
                f"sub-{subject}: no {bundle.contrast} image found; this model needs {bundle.contrast} images (other participants still run)"
            )
        )

    template_lesion = config.workflow.lesion_mask
    donor = None
    generate = task == "embed" and config.workflow.lesion_from == GENERATE_LESION
    if task == "embed" and config.workflow.lesion_from and not generate:
        donor = _donor(config.workflow.lesion_from, bids_dir, bundle, config)
    jobs = []
    for item in collected.inputs:
        mask = (
            item.lesion_mask
            if (task == "heal" or (template_lesion is None and donor is None and not generate))
            else None
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the workflow repeats these checks and logs the warnings there
                prepare_inputs(
                    item.path,
                    mask,
                    task if (mask is not None or task == "heal") else "heal",
                    orientation,
                    mask_orientation,
                )
        except (DataError, NoInput) as exc:
            failures.append(exc)
            continue
        jobs.append(
            ImageJob(
                anat=item.path,
                entities=item.entities,
                suffix=item.suffix,
                lesion_mask=mask,
                template_lesion=template_lesion if task == "embed" else None,
                lesion_from=donor.anat if donor is not None else None,
                generate_lesion=generate,
                orientation=orientation,
                mask_orientation=mask_orientation,
            )
        )
    if task == "embed":
        for job in list(jobs):
            if job.lesion_mask is None and job.template_lesion is None and job.lesion_from is None and not generate:
                failures.append(
                    DataError(
                        f"{job.anat}: embedding needs a lesion mask; pass --lesion-mask FILE (template space) or give this image a lesion mask"
                    )
                )
                jobs.remove(job)
    if task == "heal" and config.workflow.sampling.mode == "mask":
        for job in list(jobs):
            if job.lesion_mask is None:
                failures.append(
                    NoInput(
                        f"{job.anat}: --heal-mode mask needs a lesion mask and this image has none; "
                        "add its mask (sub-*_label-lesion_roi.nii.gz or --lesion-masks) or use --heal-mode auto to detect lesions"
                    )
                )
                jobs.remove(job)
    if not jobs:
        for failure in failures[1:]:  # the first is the exception's own line, printed last
            print(f"bids_usb: error: {failure}", file=sys.stderr, flush=True)
        if failures:
            raise failures[0]
        raise NoInput(f"{bids_dir}: nothing to process")
    for failure in failures:
        print(f"bids_usb: error: {failure}", file=sys.stderr, flush=True)
    return jobs, failures, donor


def _run_jobs(
    jobs, failures, donor, bids_dir: Path, output_dir: Path, work_dir: Path, bundle, config: RunConfig
) -> int:
    from .derivatives import init_dataset
    from .workflows.participant import RunSettings, init_participant_wf

    workflow = config.workflow
    settings = RunSettings(
        task=workflow.task,
        params=workflow.sampling.overrides(),
        seed=config.execution.seed,
        n_samples=workflow.n_samples,
        device=workflow.device,
        skull_stripped=workflow.skull_stripped,
        omp_nthreads=config.nipype.omp_nthreads,
        mask_growth=workflow.mask_growth if workflow.task == "heal" else "none",
    )
    init_dataset(output_dir, bids_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config.nipype.apply(work_dir, config.execution.verbose)  # before the graph is built: its cache settings apply
    wf = init_participant_wf(jobs, bundle, settings, bids_dir, output_dir, work_dir, donor=donor)
    plugin, plugin_args = config.nipype.get_plugin()
    plugin_args.setdefault("status_callback", NodeProgress(count_nodes(wf)))
    started = time.time()
    try:
        wf.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as exc:
        if storage.disk_full_in_crashes(work_dir / "crashes", started):
            raise storage.disk_full_error(output_dir if _full(output_dir) else work_dir) from exc
        data_errors = node_data_errors(work_dir / "crashes", started, jobs)
        if data_errors:
            for message in data_errors[1:]:
                print(f"bids_usb: error: {message}", file=sys.stderr, flush=True)
            raise DataError(data_errors[0]) from exc
        failed = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise BidsUsbError(
            f"the workflow failed ({failed}); the crash files in {work_dir / 'crashes'} say why "
            "(nipypecli crash FILE); rerun to resume once the cause is fixed"
        ) from exc
    log.info("workflow finished in %.1f s", time.time() - started)

    # The report nodes (one per participant, in the graph) wrote these.
    for subject in dict.fromkeys(job.entities["subject"] for job in jobs):
        print(output_dir / f"sub-{subject}.html", flush=True)
    if failures:  # a last line that says why the exit code is not 0, without repeating the errors
        n = len(failures)
        names = ", ".join(Path(str(f).split(": ", 1)[0]).name for f in failures[:3]) + (", ..." if n > 3 else "")
        print(
            f"bids_usb: error: {n} image{'s' if n != 1 else ''} could not be processed ({names}: the "
            f"error{'s' if n != 1 else ''} above); the other {len(jobs)} finished",
            file=sys.stderr,
            flush=True,
        )
        return failures[0].exit_code
    return 0


def _full(directory: Path, spare_mb: float = 1.0) -> bool:
    found = storage.free_bytes(directory)
    return found is not None and found[1] < spare_mb * 2**20


def node_data_errors(crash_dir: Path, since: float, jobs) -> list[str]:
    """The ``DataError`` messages of the nodes that crashed in this run, each prefixed with its
    image: a bad input found only inside the workflow (e.g. a lesion covering the brain found by
    skull stripping) still ends as exit 65 with one line, not as a pointer to crash files."""
    by_workflow = {f"image_{job.name}_wf": job for job in jobs}
    messages = []
    for crash in sorted(crash_dir.glob("crash-*.txt")) if crash_dir.is_dir() else []:
        if crash.stat().st_mtime < since - 1:
            continue
        text = crash.read_text(errors="replace")
        error = [
            line.strip() for line in text.splitlines() if line.strip().startswith(f"{DataError.__module__}.DataError: ")
        ]
        if not error:
            return []  # a genuine crash among them: keep the crash-file message
        message = error[-1].split(": ", 1)[1]
        node = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Node:")), "")
        job = next((j for name, j in by_workflow.items() if f".{name}." in f".{node}."), None)
        messages.append(f"{job.anat}: {message}" if job is not None and str(job.anat) not in message else message)
    return messages


def _donor(label: str, bids_dir: Path, bundle, config: RunConfig):
    """``--lesion-from sub-XX``: that participant's image with a lesion mask, checked now; its
    preprocessing runs inside the main graph (``init_participant_wf(donor=...)``), cached like
    every other node, and its lesion on the model grid goes to every image."""
    from . import discovery
    from .inputs import prepare_inputs
    from .workflows.participant import ImageJob

    try:
        donors = discovery.collect_inputs(
            bids_dir,
            participant_labels=[label],
            contrast=bundle.contrast,
            lesion_masks_dir=config.workflow.lesion_masks,
        )
    except NothingSelected as exc:
        raise NothingSelected(f"--lesion-from sub-{label}: no such participant in {bids_dir}") from exc
    with_mask = [item for item in donors.inputs if item.lesion_mask is not None]
    if not with_mask:
        raise NoInput(
            f"--lesion-from sub-{label}: this participant has no {bundle.contrast} image with a lesion mask; "
            "give one with a mask"
        )
    donor = with_mask[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_inputs(donor.path, donor.lesion_mask, "embed", config.workflow.assume_orientation)
    return ImageJob(
        anat=donor.path,
        entities=donor.entities,
        suffix=donor.suffix,
        lesion_mask=donor.lesion_mask,
        orientation=config.workflow.assume_orientation,
    )
