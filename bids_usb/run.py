"""The participant level, from parsed options to an exit code.

Checks that are cheap and can fail (paths, validation, the model, discovery, each image and
mask) run here in the main process, before any workflow is built, so that they end with the
right exit code and one clear line. Images that fail their checks are reported and skipped;
the others still run, and the exit code then tells the first kind of failure met.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import BidsUsbError, DataError, NoInput, NothingSelected, UsageError

log = logging.getLogger("bids_usb")


def run_participant(opts: dict[str, Any]) -> int:
    from . import layout
    from .derivatives import init_dataset
    from .inputs import prepare_inputs
    from .model import ModelBundle
    from .workflows.participant import ImageJob, RunSettings, init_participant_wf

    bids_dir: Path = opts["bids_dir"]
    if not bids_dir.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory; give the root folder of a BIDS dataset")
    bids_dir = bids_dir.resolve()
    output_dir: Path = opts["output_dir"].absolute()
    layout.check_output_dir(bids_dir, output_dir)
    work_dir = (opts["work_dir"] or output_dir.parent / "work" / "bids_usb").absolute()
    layout.check_work_dir(bids_dir, work_dir)
    validate_dataset(bids_dir, opts)

    bundle = ModelBundle.open(opts["model"])
    task = opts["task"]
    collected = collect_from_options(bids_dir, opts, bundle.contrast)
    failures: list[BidsUsbError] = []
    for subject in collected.missing:
        failures.append(NoInput(f"sub-{subject}: no {bundle.contrast} image found; this model needs {bundle.contrast} images (other participants still run)"))

    template_lesion = opts["lesion_mask"]
    if task == "embed" and opts["lesion_from"]:
        if template_lesion is not None:
            raise UsageError("--lesion-mask and --lesion-from both name the lesion to embed; give one")
        template_lesion = _donor_lesion(opts["lesion_from"], bids_dir, bundle, opts, work_dir)
    jobs = []
    for item in collected.inputs:
        mask = item.lesion_mask if (task == "heal" or template_lesion is None) else None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the workflow repeats these checks and logs the warnings there
                prepare_inputs(item.path, mask, task if (mask is not None or task == "heal") else "heal")
        except DataError as exc:
            failures.append(exc)
            continue
        jobs.append(ImageJob(anat=item.path, entities=item.entities, suffix=item.suffix, lesion_mask=mask,
                             template_lesion=template_lesion if task == "embed" else None))
    if task == "embed":
        for job in list(jobs):
            if job.lesion_mask is None and job.template_lesion is None:
                failures.append(DataError(f"{job.anat}: embedding needs a lesion mask; pass --lesion-mask FILE (template space) or give this image a lesion mask"))
                jobs.remove(job)
    if task == "heal" and opts.get("heal_mode") == "mask":
        for job in list(jobs):
            if job.lesion_mask is None:
                failures.append(NoInput(f"{job.anat}: --heal-mode mask needs a lesion mask and this image has none; "
                                        "add its mask (sub-*_label-lesion_roi.nii.gz or --lesion-masks) or use --heal-mode auto to detect lesions"))
                jobs.remove(job)
    for failure in failures:
        log.error("%s", failure)
        print(f"bids_usb: error: {failure}", flush=True)
    if not jobs:
        if failures:
            raise failures[0]
        raise NoInput(f"{bids_dir}: nothing to process")

    settings = RunSettings(
        task=task,
        params=_sampling_params(opts, bundle, task),
        seed=opts["seed"],
        n_samples=opts["n_samples"],
        device=opts["device"],
        skull_stripped=opts["skull_stripped"],
        omp_nthreads=opts["omp_nthreads"] or 1,
    )
    # Worker processes inherit these: ANTs (ITK) and PyTorch use --omp-nthreads threads per node.
    threads = str(settings.omp_nthreads)
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
    init_dataset(output_dir, bids_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    _configure_nipype(work_dir, opts["verbose"])  # before the graph is built, so its cache settings apply
    wf = init_participant_wf(jobs, bundle, settings, bids_dir, output_dir, work_dir)
    plugin, plugin_args = _plugin(opts)
    started = time.time()
    try:
        graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as exc:
        raise BidsUsbError(f"the workflow failed ({exc}); see the crash files in {work_dir} and rerun to resume") from exc
    log.info("workflow finished in %.1f s", time.time() - started)

    reports = _write_reports(graph, jobs, bundle, settings, output_dir)
    for path in reports:
        print(path)
    if failures:
        return failures[0].exit_code
    return 0


def validate_dataset(bids_dir: Path, opts: dict[str, Any]) -> None:
    """The dataset checks and bids-validator-deno, unless --skip-bids-validation (both levels)."""
    if opts["skip_bids_validation"]:
        return
    from . import layout
    from .validation import validate_or_raise

    layout.dataset_check(bids_dir)
    validate_or_raise(bids_dir)


def collect_from_options(bids_dir: Path, opts: dict[str, Any], contrast: str):
    """pybids discovery with the selection options every level shares."""
    from . import layout

    bids_filter = layout.load_bids_filter(opts["bids_filter_file"]) if opts["bids_filter_file"] else None
    return layout.collect_inputs(
        bids_dir,
        participant_labels=_labels(opts["participant_label"], "sub-"),
        session_labels=_labels(opts["session_label"], "ses-"),
        bids_filter=bids_filter,
        contrast=contrast,
        lesion_masks_dir=opts["lesion_masks"],
    )


def _donor_lesion(label: str, bids_dir: Path, bundle, opts: dict[str, Any], work_dir: Path) -> Path:
    """``--lesion-from sub-XX``: that participant's lesion on the model grid (template space),
    through its own preprocessing and registration (cached in the work directory like any node)."""
    from nipype.pipeline import engine as pe

    from . import layout
    from .interfaces.preprocessing import ModelTemplate
    from .workflows.participant import init_preprocess_wf

    label = label[4:] if label.startswith("sub-") else label
    try:
        donors = layout.collect_inputs(bids_dir, participant_labels=[label], contrast=bundle.contrast, lesion_masks_dir=opts["lesion_masks"])
    except NothingSelected as exc:
        raise NothingSelected(f"--lesion-from sub-{label}: no such participant in {bids_dir}") from exc
    with_mask = [item for item in donors.inputs if item.lesion_mask is not None]
    if not with_mask:
        raise NoInput(f"--lesion-from sub-{label}: this participant has no {bundle.contrast} image with a lesion mask; give one with a mask")
    donor = with_mask[0]
    work_dir.mkdir(parents=True, exist_ok=True)
    _configure_nipype(work_dir, opts["verbose"])
    wf = pe.Workflow(name="bids_usb_donor_wf", base_dir=str(work_dir))
    template = pe.Node(ModelTemplate(model_dir=str(bundle.path)), name="model_template")
    name = "donor_" + "".join(c if c.isalnum() else "_" for c in donor.path.name.split(".")[0])
    preprocess = init_preprocess_wf(donor.path, lesion_mask=donor.lesion_mask, task="embed", contrast=bundle.contrast,
                                    normalisation=bundle.config.grid.normalisation,
                                    skull_stripped=opts["skull_stripped"], name=name)
    wf.connect(template, "template", preprocess, "inputnode.template")
    try:
        graph = wf.run(plugin="Linear")
    except RuntimeError as exc:
        raise BidsUsbError(f"--lesion-from sub-{label}: preprocessing the donor failed ({exc}); see the crash files in {work_dir}") from exc
    node = next(n for n in graph.nodes() if n.fullname.endswith(f"{name}.to_model_grid"))
    lesion = node.result.outputs.lesion_mask
    if not lesion:
        raise DataError(f"--lesion-from sub-{label}: the lesion vanished on the model grid; it is too small for this model")
    return Path(lesion)


def _write_reports(graph, jobs, bundle, settings, output_dir: Path) -> list[Path]:
    """One HTML per participant, from the finished graph: its sink outputs and node timings."""
    from usb_model import __version__

    from .reports.participant import ImageReport, write_participant_report

    nodes = {node.fullname: node for node in graph.nodes()}
    template = nodes["bids_usb_wf.model_template"].result.outputs.template
    by_subject: dict[str, list] = {}
    for job in jobs:
        prefix = f"bids_usb_wf.image_{job.name}_wf."
        timings = {}
        for fullname, node in nodes.items():
            if fullname.startswith(prefix):
                runtime = getattr(node.result, "runtime", None)
                timings[fullname[len(prefix):]] = float(getattr(runtime, "duration", 0.0) or 0.0)
        sink = nodes[prefix + "derivatives"].result.outputs
        usb = nodes[prefix + "usb"].result.outputs
        prepared = nodes[prefix + "prepare"].result.outputs
        report = ImageReport(
            name=Path(job.anat).name.split(".")[0],
            anat=job.anat,
            written=dict(sink.written),
            template=Path(template),
            task=settings.task,
            parameters={**dict(usb.parameters), "skull_stripped": settings.skull_stripped},
            timings=timings,
            model={"Name": bundle.name, "SHA256": bundle.sha256, "Contrast": bundle.contrast, "Path": str(bundle.path)},
            warnings=list(prepared.warnings or []),
        )
        by_subject.setdefault(job.entities["subject"], []).append(report)
    return [write_participant_report(output_dir, subject, images, __version__) for subject, images in by_subject.items()]


def _labels(values, prefix):
    from .cli import _labels as parse

    return parse(values, prefix)


def _sampling_params(opts: dict[str, Any], bundle, task: str) -> dict[str, Any]:
    """The sampling options given on the command line; the rest are the checkpoint's, resolved
    by the sampler (heal: per image, since the default mode depends on whether a mask exists)."""
    s = bundle.config.sampling
    params: dict[str, Any] = {}
    if opts["t_start"] is not None:
        params["t_start"] = opts["t_start"]
    elif task == "embed":
        params["t_start"] = s.t_start_embed
    if opts["steps"]:
        params["steps"] = opts["steps"]
    for key in ("alpha0", "k", "ddim_eta"):
        if opts[key] is not None:
            params[key] = opts[key]
    if task == "embed" and opts["lcg_eta"] is not None:
        params["lcg_eta"] = opts["lcg_eta"]
    if task == "heal":
        for key in ("heal_mode", "fill"):
            if opts.get(key):
                params["mode" if key == "heal_mode" else key] = opts[key]
        for key in ("detect_threshold", "detect_min_ml"):
            if opts.get(key) is not None:
                params[key] = opts[key]
    if opts["no_acg"]:
        params["acg"] = False
    return params


def _plugin(opts: dict[str, Any]) -> tuple[str, dict]:
    from .cli import _mem_gb, _plugin_args

    plugin = opts["plugin"] or "MultiProc"
    args = _plugin_args(opts["plugin_args"])
    if plugin == "MultiProc":
        args.setdefault("n_procs", opts["nprocs"] or os.cpu_count() or 1)
        mem = _mem_gb(opts["mem"])
        if mem:
            args.setdefault("memory_gb", mem)
        args.setdefault("raise_insufficient", False)
    return plugin, args


def _configure_nipype(work_dir: Path, verbose: int) -> None:
    from nipype import config, logging as nlogging

    config.update_config({
        "execution": {
            "crashdump_dir": str(work_dir / "crashes"),
            "crashfile_format": "txt",
            "hash_method": "content",
            "remove_unnecessary_outputs": False,
            "stop_on_first_crash": False,
        },
        "monitoring": {"enabled": False},
    })
    nlogging.update_logging(config)
    level = "INFO" if verbose else "WARNING"
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        nlogging.getLogger(name).setLevel(level)
