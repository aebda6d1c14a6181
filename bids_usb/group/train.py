"""``--group-task train``: train a USB model on a cohort's brains.

    checks -> collect the T1w (or FLAIR) images -> split: healthy participants | participants
    with a lesion mask -> preprocess all (the participant level's chain, cached in the work
    directory) onto the config's grid -> TripletDataset(images = the healthy brains,
    lesion_masks = the lesion masks on the grid, as shape priors) -> usb_model.train.train_all
    -> OUTPUT_DIR/models/<name>/ {checkpoint/, state/, log.tsv, curves.png, report.html}

Multi-GPU: run the same command under ``torchrun --nproc-per-node N``. Every rank joins the
process group first; rank 0 alone checks, preprocesses and prepares the model directory while
the others wait in a collective (broadcast) with a long timeout; rank 0 then sends them the list
of preprocessed files (or its error, which every rank raises, so they all exit alike), and all
ranks train under DDP. Rank 0 writes the checkpoint, log and report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import BidsUsbError, CannotCreateOutput, DataError, NoInput, UsageError
from ._common import add_bidsignore, check_name, load_config, pick_device, say, warn, written

log = logging.getLogger("bids_usb.group")

#: Steps per stage when --train-steps is not given (the tiny preset is for tests and smoke runs).
DEFAULT_STEPS = {"tiny": "autoencoder=20,lesion=20,brain=20"}
DEFAULT_STEPS_OTHER = "autoencoder=600,lesion=1500,brain=1500"
#: Files the group level itself leaves in a model directory (besides checkpoint/ and state/).
OWN_FILES = {"log.tsv", "curves.png", "report.html", "figures", "training.json"}
LOG_EVERY = 10
SAVE_EVERY = 200
DDP_TIMEOUT_ENV = "BIDS_USB_DDP_TIMEOUT"  # seconds the other ranks wait for rank 0's preprocessing


@dataclass
class _Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> _Ranks:
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def default_steps(cfg_name: str) -> str:
    return DEFAULT_STEPS.get(cfg_name, DEFAULT_STEPS_OTHER)


def parse_train_steps(text: str) -> dict[str, int]:
    import click

    from usb_model.train.cli import parse_steps

    try:
        steps = parse_steps(text)
    except click.BadParameter as exc:
        raise UsageError(f"--train-steps {text}: {exc.format_message()}") from exc
    if not steps:
        raise UsageError(
            f"--train-steps {text!r}: give at least one stage, e.g. autoencoder=600,lesion=1500,brain=1500"
        )
    return steps


# --------------------------------------------------------------------------------------------
# The model directory
# --------------------------------------------------------------------------------------------


def _state_json(path: Path) -> dict[str, Any]:
    """The JSON part of a saved trainer state (tensors left as markers), as plain dicts."""

    def walk(obj):
        if isinstance(obj, dict) and "__dict__" in obj:
            return {k[1]: walk(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(json.loads(path.read_text()))


def model_dir_plan(model_dir: Path, cfg, resume: bool, overwrite: bool, steps: dict[str, int] | None = None) -> str:
    """What to do with ``OUTPUT_DIR/models/<name>``: "fresh", "clean" (only our own leftovers
    from a run that never saved: start fresh), "resume" or "replace" (--overwrite).

    Raises CannotCreateOutput (73) for a directory that cannot be resumed: not a training
    directory, a state of another architecture (grid, autoencoder, denoiser, schedule), or a
    state with --no-resume; --overwrite replaces it instead. A resumable state whose earlier
    stage ``steps`` asks to train further, after a later stage started on it, is a UsageError
    (64): the trainer would refuse it after the preprocessing.
    """
    from usb_model.config import USBConfig
    from usb_model.train.trainer import ARCHITECTURE, STATE_DIR, STATE_NAME

    if not model_dir.exists():
        return "fresh"
    fix = "pass --overwrite to replace it, or choose another --model-name"
    if not model_dir.is_dir():
        if overwrite:
            return "replace"
        raise CannotCreateOutput(f"{model_dir} exists and is not a directory; {fix}")
    state = model_dir / STATE_DIR / f"{STATE_NAME}.json"
    if state.is_file():
        reason = None
        try:
            saved = _state_json(state)
            saved_cfg = USBConfig.from_dict(saved["config"]).to_dict()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"its training state {state} cannot be read ({exc})"
        else:
            current = cfg.to_dict()
            changed = [s for s in ARCHITECTURE if saved_cfg[s] != current[s]]
            if changed:
                reason = (
                    f"it was trained with another {', '.join(changed)} configuration "
                    f"(preset {saved_cfg.get('name')!r}, now {cfg.name!r})"
                )
            elif not resume:
                reason = "it holds a training state and --no-resume was given"
        if reason is None:
            _check_stage_order(saved.get("progress", {}), steps or {}, model_dir)
            return "resume"
        if overwrite:
            return "replace"
        raise CannotCreateOutput(f"{model_dir} cannot be resumed: {reason}; {fix}")
    others = sorted(p.name for p in model_dir.iterdir() if p.name not in OWN_FILES and not p.name.startswith("."))
    if not others:
        return "clean" if any(model_dir.iterdir()) else "fresh"
    if overwrite:
        return "replace"
    shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
    raise CannotCreateOutput(
        f"{model_dir} exists and is not a bids_usb training directory (no state/trainer.json; it holds {shown}); {fix}"
    )


def _check_stage_order(progress: dict[str, int], steps: dict[str, int], model_dir: Path) -> None:
    from usb_model.train import STAGES

    for i, stage in enumerate(STAGES):
        done = int(progress.get(stage, 0))
        later = [s for s in STAGES[i + 1 :] if int(progress.get(s, 0)) > 0]
        if int(steps.get(stage, done)) > done and later:
            raise UsageError(
                f"{model_dir}: cannot train {stage} further ({done} -> {steps[stage]} steps): {', '.join(later)} "
                f"was already trained on it; keep {stage}={done}, or start a new model (--model-name, or --overwrite)"
            )


def _apply_plan(model_dir: Path, plan: str) -> None:
    if plan == "replace":
        if model_dir.is_dir():
            shutil.rmtree(model_dir)
        else:
            model_dir.unlink()
    elif plan == "clean":
        for name in OWN_FILES:
            path = model_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


# --------------------------------------------------------------------------------------------
# Rank 0: inputs and preprocessing
# --------------------------------------------------------------------------------------------


def _prepare(config, cfg, model_dir: Path, steps: dict[str, int]) -> dict[str, Any]:
    """Checks, collection and preprocessing (rank 0 only); returns what training needs."""
    import warnings

    from ..dataset import collect, validate_dataset
    from ..derivatives import init_dataset
    from ..inputs import prepare_inputs
    from ..workflows.group import TrainImage, arrays_dir, init_group_train_wf

    bids_dir: Path = config.execution.bids_dir
    output_dir: Path = config.execution.output_dir
    work_dir: Path = config.execution.work_dir
    plan = model_dir_plan(model_dir, cfg, config.group.resume, config.group.overwrite, steps)
    validate_dataset(bids_dir, config)

    contrast = cfg.grid.contrast
    collected = collect(bids_dir, config, contrast)
    for subject in collected.missing:
        warn(f"sub-{subject}: no {contrast} image found; it is left out of the training cohort")
    lesioned_subjects = {item.subject for item in collected.inputs if item.lesion_mask is not None}
    images: list[TrainImage] = []
    failures: list[BidsUsbError] = []
    for item in collected.inputs:
        healthy = item.subject not in lesioned_subjects
        if not healthy and item.lesion_mask is None:
            continue  # a lesioned participant's image without its own mask: neither healthy nor a prior
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the workflow repeats these checks and logs the warnings
                prepare_inputs(item.path, item.lesion_mask, "heal")
        except DataError as exc:
            failures.append(exc)
            warn(f"{exc} (left out of the training cohort)")
            continue
        images.append(
            TrainImage(
                anat=item.path,
                entities=item.entities,
                suffix=item.suffix,
                lesion_mask=item.lesion_mask,
                healthy=healthy,
            )
        )
    healthy_images = [i for i in images if i.healthy]
    if not healthy_images:
        if failures and any(i.subject not in lesioned_subjects for i in collected.inputs):
            raise failures[0]
        raise NoInput(
            f"{bids_dir}: no healthy {contrast} image to train on: "
            + (
                f"every selected participant ({len(lesioned_subjects)}) has a lesion mask"
                if lesioned_subjects
                else f"no {contrast} image was found"
            )
            + "; training needs brains of participants without a lesion mask (their lesion masks are only used as shape priors)"
        )

    work_dir.mkdir(parents=True, exist_ok=True)
    config.nipype.apply(work_dir, config.execution.verbose)  # before the nodes exist: they read the hash method
    wf = init_group_train_wf(
        images,
        cfg.grid.shape,
        cfg.grid.voxel_size,
        work_dir,
        contrast=contrast,
        skull_stripped=config.workflow.skull_stripped,
        omp_nthreads=config.nipype.omp_nthreads,
        template_source=cfg.grid.template_source,
    )
    plugin, plugin_args = config.nipype.get_plugin()
    if plugin == "MultiProc" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        plugin_args.setdefault("mp_context", "forkserver")  # workers must not inherit the process group
    say(
        f"preprocessing {len(images)} image(s) onto the {'x'.join(map(str, cfg.grid.shape))} grid "
        f"({len(healthy_images)} healthy, {len(images) - len(healthy_images)} lesion masks); cache: "
        f"{work_dir}"
    )
    started = time.time()
    try:
        wf.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as exc:
        raise BidsUsbError(
            f"the preprocessing workflow failed ({exc}); see the crash files in {work_dir / 'crashes'} and rerun to resume"
        ) from exc
    log.info("preprocessing finished in %.1f s", time.time() - started)
    # The TrainingArray nodes wrote each image's volume at a known path.
    arrays = arrays_dir(work_dir, cfg.grid.shape, cfg.grid.voxel_size, cfg.grid.template_source)
    brains, masks, mask_sources, sources = [], [], [], []
    for image in images:
        if image.healthy:
            brains.append(str(arrays / f"{image.name}.npy"))
            sources.append(str(image.anat))
            continue
        npy = arrays / f"{image.name}_lesion.npy"
        if npy.is_file():
            masks.append(str(npy))
            mask_sources.append(str(image.lesion_mask))
        else:
            warn(
                f"{image.lesion_mask}: no lesion voxel is left on the {'x'.join(map(str, cfg.grid.shape))} model grid; "
                "not used as a shape prior"
            )
    init_dataset(output_dir, bids_dir)
    add_bidsignore(output_dir)
    _apply_plan(model_dir, plan)
    return {
        "brains": brains,
        "masks": masks,
        "sources": sources,
        "mask_sources": mask_sources,
        "plan": plan,
        "n_failed": len(failures),
    }


def _join_group(ranks: _Ranks, device):
    """Join torchrun's process group before rank 0 preprocesses (the trainer reuses it).

    CUDA is not touched here: rank 0's preprocessing forks nipype workers (and deepbet may use
    the GPU in them), which a CUDA context in the parent would break. ``_share`` selects the
    device just before the first collective.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get(DDP_TIMEOUT_ENV, str(7 * 24 * 3600))))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def _share(ranks: _Ranks, status: dict[str, Any], device) -> dict[str, Any]:
    """Rank 0's status (the prepared files, or its error) to every rank."""
    if ranks.world_size <= 1:
        return status
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL sends the pickled status through this device
    box = [status]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _raise_shared(status: dict[str, Any]) -> None:
    if "error" in status:
        kind = getattr(errors, status["error"], BidsUsbError)
        if not (isinstance(kind, type) and issubclass(kind, BidsUsbError)):
            kind = BidsUsbError
        raise kind(status["message"])


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


def run_train(config) -> int:
    from .. import directories

    ranks = _Ranks.from_env()
    bids_dir: Path = config.execution.bids_dir
    if not bids_dir.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory; give the root folder of a BIDS dataset")
    bids_dir = bids_dir.resolve()
    output_dir = directories.check_output_dir(bids_dir, config.execution.output_dir.absolute())
    work_dir = config.execution.resolved_work_dir(output_dir)
    directories.check_work_dir(bids_dir, work_dir)
    name = check_name(config.group.model_name, "--model-name")
    cfg = load_config(config.group.preset)
    # The copy of the template the new checkpoint is trained with and records: a config asking
    # for TemplateFlow's that is not there offline gets nilearn's (one log line), and says so.
    from usb_model.template import resolve_source

    source = resolve_source(cfg.grid.template_source, fallback=True)
    if source.name != cfg.grid.template_source:
        cfg = cfg.replace(grid={"template_source": source.name})
    if config.group.batch_size:
        cfg = cfg.replace(training={"batch_size": int(config.group.batch_size)})
    steps = parse_train_steps(config.group.train_steps or default_steps(cfg.name))
    device = pick_device(config.workflow.device)
    model_dir = output_dir / "models" / name
    config = dataclasses.replace(
        config,
        execution=dataclasses.replace(config.execution, bids_dir=bids_dir, output_dir=output_dir, work_dir=work_dir),
    )

    if ranks.world_size > 1:
        device = _join_group(ranks, device)
    try:
        status: dict[str, Any]
        if ranks.is_main:
            try:
                status = {"ok": _prepare(config, cfg, model_dir, steps)}
            except BidsUsbError as exc:
                status = {"error": type(exc).__name__, "message": str(exc)}
                if ranks.world_size > 1:
                    _share(ranks, status, device)
                raise
            except Exception as exc:
                if ranks.world_size > 1:
                    _share(
                        ranks,
                        {"error": "BidsUsbError", "message": f"rank 0 failed while preprocessing: {exc!r}"},
                        device,
                    )
                raise
            status = _share(ranks, status, device)
        else:
            status = _share(ranks, {}, device)
            _raise_shared(status)
        return _train(config, cfg, steps, device, model_dir, status["ok"], ranks)
    finally:
        if ranks.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _train(config, cfg, steps, device, model_dir: Path, prepared: dict[str, Any], ranks: _Ranks) -> int:
    import numpy as np

    from usb_model import __version__
    from usb_model.train import train_all
    from usb_model.train.cli import build_dataset
    from usb_model.train.data import default_num_workers

    brains = [np.load(p, mmap_mode="r") for p in prepared["brains"]]
    masks = [np.load(p, mmap_mode="r") for p in prepared["masks"]]
    dataset = build_dataset(cfg, config.execution.seed, images=brains, lesion_masks=masks or None)
    training_data = {
        "source": f"bids_usb {__version__} group --group-task train",
        "bids_dir": str(config.execution.bids_dir),
        "healthy_images": [Path(p).name for p in prepared["sources"]],
        "lesion_shape_priors": [Path(p).name for p in prepared["mask_sources"]],
        "skull_stripped_input": bool(config.workflow.skull_stripped),
        "seed": config.execution.seed,
    }
    if ranks.is_main:
        resumed = prepared["plan"] == "resume"
        say(
            f"training {cfg.name!r} on {len(brains)} healthy brain(s) and {len(masks)} lesion shape prior(s), "
            f"steps {', '.join(f'{k}={v}' for k, v in steps.items())}, batch {cfg.training.batch_size} x {ranks.world_size} process(es), "
            f"device {device}{' (resuming)' if resumed else ''}"
        )
    started = time.time()
    try:
        networks = train_all(
            cfg,
            dataset,
            model_dir,
            steps,
            device=device,
            resume=True,  # the model directory was checked (and emptied where needed) above
            log_every=LOG_EVERY,
            save_every=SAVE_EVERY,
            seed=config.execution.seed,
            num_workers=default_num_workers(device, ranks.world_size),
            training_data=training_data,
        )
    except ValueError as exc:  # a stage that cannot continue, a state of another configuration
        raise UsageError(f"{model_dir}: {exc}") from exc
    elapsed = time.time() - started
    if not ranks.is_main:
        return 0
    from ..reports.group import write_training_report

    info = {
        "config": cfg.name,
        "steps": steps,
        "batch_size": cfg.training.batch_size,
        "world_size": ranks.world_size,
        "device": str(device),
        "seed": config.execution.seed,
        "seconds_this_run": round(elapsed, 1),
        "healthy_images": prepared["sources"],
        "lesion_shape_priors": prepared["mask_sources"],
        "bids_dir": str(config.execution.bids_dir),
        "version": __version__,
    }
    report = write_training_report(model_dir, networks, cfg, brains, info, seed=config.execution.seed, device=device)
    checkpoint = model_dir / "checkpoint"
    say(
        f"model: {checkpoint}  (pass it to the participant level or to generate with --model {checkpoint}); "
        f"training log: {model_dir / 'log.tsv'}"
    )
    written(checkpoint)
    written(report)
    return 0
