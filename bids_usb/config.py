"""The run configuration: filled once from the command line, typed, checked, read by every level.

The command line (``bids_usb.cli``) only parses; this module turns what was given into typed
values (labels without ``sub-``, memory in GB, the plugin and its arguments, training steps per
stage, the filter file's queries, the sampling parameters as one ``usb_model`` object) and checks
the options against each other: an option that does not apply to the chosen level or task is a
usage error (64) naming the option, rather than silently ignored. The sections follow
fMRIPrep's ``config.py`` (execution, nipype, workflow), plus one for the group level.

Imports run one way: ``cli -> config -> run / group -> workflows -> interfaces -> plain
functions -> usb_model``; this module imports only the error classes and plain parsers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usb_model.config import EditParameters

from .discovery import strip_labels
from .errors import UsageError

LEVELS = ("participant", "group")
GROUP_TASKS = ("train", "metrics", "generate")

#: ``--lesion-from generate``: the model proposes each brain's lesion (``USB.generate_lesion``).
GENERATE_LESION = "generate"

# Where each option applies: "participant:heal", "participant:embed", "group:train",
# "group:metrics", "group:generate". Options not listed apply everywhere.
_PARTICIPANT = {"participant:heal", "participant:embed"}
_PREPROCESSING = _PARTICIPANT | {"group:train"}
SCOPES: dict[str, set[str]] = {
    "participant_label": _PREPROCESSING | {"group:metrics"},
    "session_label": _PREPROCESSING,
    "bids_filter_file": _PREPROCESSING,
    "bids_database_dir": _PREPROCESSING,
    "work_dir": _PREPROCESSING,
    "nprocs": _PREPROCESSING,
    "mem": _PREPROCESSING,
    "plugin": _PREPROCESSING,
    "plugin_args": _PREPROCESSING,
    "stop_on_first_crash": _PREPROCESSING,
    "skull_stripped": _PREPROCESSING,
    "lesion_masks": _PREPROCESSING,
    "task": _PARTICIPANT,
    "model": _PARTICIPANT | {"group:generate"},
    "lesion_mask": {"participant:embed"},
    "lesion_from": {"participant:embed"},
    "heal_mode": {"participant:heal"},
    "fill": {"participant:heal"},
    "fill_residual": {"participant:heal"},
    "ae_passes": {"participant:heal"},
    "mask_growth": {"participant:heal"},
    "detect_threshold": {"participant:heal"},
    "detect_min_ml": {"participant:heal"},
    "band_mm": _PARTICIPANT,
    "steps": _PARTICIPANT,
    "t_start": _PARTICIPANT,
    "alpha0": _PARTICIPANT,
    "k": _PARTICIPANT,
    "lcg_eta": {"participant:embed"},
    "ddim_eta": _PARTICIPANT,
    "no_acg": _PARTICIPANT,
    "n_samples": _PARTICIPANT,
    "assume_orientation": _PARTICIPANT,
    "mask_orientation": _PARTICIPANT,
    "group_task": {"group:train", "group:metrics", "group:generate"},
    "preset": {"group:train"},
    "train_steps": {"group:train"},
    "batch_size": {"group:train", "group:generate"},
    "model_name": {"group:train"},
    "resume": {"group:train"},
    "overwrite": {"group:train", "group:generate"},
    "ground_truth": {"group:metrics"},
    "n_generate": {"group:generate"},
    "masks": {"group:generate"},
    "device": _PARTICIPANT | {"group:train", "group:generate"},
}


def parse_labels(values: Iterable[str], prefix: str, option: str) -> tuple[str, ...] | None:
    """Labels from repeated flags or space/comma-separated lists, ``sub-``/``ses-`` dropped.

    None when the option was not given (every participant); an option given with nothing in it
    is a mistake (a job script's unset variable), never "every participant". A value with a ``.``
    or a ``/`` cannot be a BIDS label (labels are alphanumeric), so it is read as a file of labels
    (``participants.txt``, one or more a line): a cohort's list need not go on the command line."""
    values = tuple(values)
    if not values:
        return None
    values = tuple(_read_labels(value, option) if ("." in value or "/" in value) else value for value in values)
    items = [item for value in values for item in value.replace(",", " ").split()]
    if not items:
        raise UsageError(
            f"{option} was given an empty value; name the labels (e.g. {option} 01 02), "
            "or leave the option out to process every one"
        )
    bare = [item for item in items if item == prefix]
    if bare:
        raise UsageError(f"{option} {bare[0]!r} names no label; give e.g. {option} 01")
    return tuple(strip_labels(items, prefix))


def _read_labels(path: str, option: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: not a label (labels are letters and digits) and not a readable file ({exc.strerror})"
        ) from exc


def parse_mem_gb(text: str | None) -> float | None:
    """``--mem``: megabytes unless a unit is given (as fMRIPrep reads it): 16000, 16000MB, 16G, 1T."""
    if text is None:
        return None
    value = text.strip().upper().removesuffix("B")
    factor = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}.get(value[-1:])
    try:
        amount = float(value[:-1]) * factor if factor else float(value) / 1024
    except ValueError as exc:
        raise UsageError(f"--mem {text}: give an amount such as 16000 (MB) or 16GB") from exc
    if amount <= 0:
        raise UsageError(f"--mem {text}: give an amount above zero")
    return amount


def parse_plugin_args(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    try:
        data = json.loads(path.read_text() if path.is_file() else text)
    except ValueError as exc:
        raise UsageError(f"--plugin-args {text}: not JSON ({exc}); pass a JSON object or a JSON file") from exc
    if not isinstance(data, dict):
        raise UsageError(f"--plugin-args {text}: a JSON object is needed")
    return data


def check_device(text: str) -> str:
    """``--device``: a typo or a missing GPU is a usage error before any work (64)."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {text}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        raise UsageError(f"--device {text}: bids_usb runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available on this machine; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {text}: this machine has {count} CUDA device(s); use cuda:0 .. cuda:{count - 1}")
    return text


@dataclass(frozen=True)
class Execution:
    """What runs on what, and where it goes."""

    bids_dir: Path
    output_dir: Path
    level: str
    work_dir: Path | None = None  # None: OUTPUT_DIR/../work/bids_usb
    participant_labels: tuple[str, ...] | None = None
    session_labels: tuple[str, ...] | None = None
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    bids_database_dir: Path | None = None  # pybids' index, built once and shared (bids_usb.database)
    seed: int = 0
    verbose: int = 0

    def resolved_work_dir(self, output_dir: Path | None = None) -> Path:
        output_dir = output_dir or self.output_dir.absolute()
        return (self.work_dir or output_dir.parent / "work" / "bids_usb").absolute()


@dataclass(frozen=True)
class Nipype:
    """How nipype runs the graph: the plugin with its arguments, and the resources it plans with."""

    plugin: str = "MultiProc"
    plugin_args: Mapping[str, Any] = field(default_factory=dict)
    nprocs: int | None = None
    omp_nthreads: int = 1
    mem_gb: float | None = None
    stop_on_first_crash: bool = False

    def get_plugin(self) -> tuple[str, dict]:
        """``(plugin, plugin_args)`` for ``Workflow.run``, MultiProc's resources filled in."""
        args = dict(self.plugin_args)
        if self.plugin == "MultiProc":
            args.setdefault("n_procs", self.nprocs or os.cpu_count() or 1)
            if self.mem_gb:
                args.setdefault("memory_gb", self.mem_gb)
            args.setdefault("raise_insufficient", False)
        if self.plugin == "SLURM" and not os.environ.get("LOGNAME"):
            # nipype's SLURMPlugin names every job after os.environ["LOGNAME"] and fails with a
            # KeyError where it is unset (containers, cron, CI, `su -c`): give it the user's name.
            import getpass

            os.environ["LOGNAME"] = getpass.getuser()
        return self.plugin, args

    def apply(self, work_dir: Path, verbose: int = 0) -> None:
        """nipype's global settings for this run (crash files as text in the work directory,
        content hashes so that a copied dataset still hits the cache), and the thread counts
        that worker processes inherit (ANTs/ITK and PyTorch use --omp-nthreads threads)."""
        from nipype import config
        from nipype import logging as nlogging

        from .interfaces import nipype_logs_to_stderr

        threads = str(self.omp_nthreads)
        os.environ["OMP_NUM_THREADS"] = threads
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
        if self.mem_gb:  # the USB node cuts the autoencoder's boxes to fit (usb_model.passes)
            os.environ["BIDS_USB_MEM_GB"] = str(self.mem_gb)
        else:
            os.environ.pop("BIDS_USB_MEM_GB", None)
        config.update_config(
            {
                "execution": {
                    "crashdump_dir": str(work_dir / "crashes"),
                    "crashfile_format": "txt",
                    "hash_method": "content",
                    "remove_unnecessary_outputs": False,
                    # --stop-on-first-crash: an array task ends at its first failed node instead
                    # of running every other branch first (fMRIPrep's flag, the same meaning).
                    "stop_on_first_crash": self.stop_on_first_crash,
                },
                "monitoring": {"enabled": False},
            }
        )
        nlogging.update_logging(config)
        nipype_logs_to_stderr()
        level = "INFO" if verbose else "WARNING"
        for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
            nlogging.getLogger(name).setLevel(level)


@dataclass(frozen=True)
class Workflow:
    """The participant level's choices: the task, the model, the lesions, and the sampler."""

    task: str = "heal"
    model: Path | None = None  # None: the bundled demo model
    lesion_masks: Path | None = None
    lesion_mask: Path | None = None
    lesion_from: str | None = None  # a participant label, without sub-; or "generate" (GENERATE_LESION)
    sampling: EditParameters = field(default_factory=EditParameters)
    n_samples: int = 1
    device: str = "auto"
    skull_stripped: bool = False
    assume_orientation: str | None = None
    mask_orientation: str | None = None  # a mask whose header contradicts its image's: "image" or "header"
    mask_growth: str = "auto"  # heal: how a given lesion mask is grown to the lesion (usb_model.mask_growth)


@dataclass(frozen=True)
class Group:
    """The group level's task and its options."""

    task: str | None = None
    preset: str | None = None
    train_steps: str | None = None  # parsed by the train task against the preset's stages
    batch_size: int | None = None
    model_name: str = "usb"
    resume: bool = True
    overwrite: bool = False
    ground_truth: Path | None = None
    n_generate: int | None = None
    masks: Path | None = None


@dataclass(frozen=True)
class RunConfig:
    execution: Execution
    nipype: Nipype
    workflow: Workflow
    group: Group

    @property
    def scope(self) -> str:
        if self.execution.level == "participant":
            return f"participant:{self.workflow.task}"
        return f"group:{self.group.task}"

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], given: Iterable[str] = ()) -> RunConfig:
        """Typed sections from the parsed options; ``given`` names the options the user set
        (not defaults), which must apply to the level and task chosen."""
        level = opts["analysis_level"]
        participant_labels = parse_labels(opts.get("participant_label") or (), "sub-", "--participant-label")
        session_labels = parse_labels(opts.get("session_label") or (), "ses-", "--session-label")
        execution = Execution(
            bids_dir=Path(opts["bids_dir"]),
            output_dir=Path(opts["output_dir"]),
            level=level,
            work_dir=Path(opts["work_dir"]) if opts.get("work_dir") else None,
            participant_labels=participant_labels,
            session_labels=session_labels,
            bids_filter_file=opts.get("bids_filter_file"),
            skip_bids_validation=bool(opts.get("skip_bids_validation")),
            bids_database_dir=_absolute(opts.get("bids_database_dir")),
            seed=int(opts.get("seed") or 0),
            verbose=int(opts.get("verbose") or 0),
        )
        nipype = Nipype(
            plugin=opts.get("plugin") or "MultiProc",
            plugin_args=parse_plugin_args(opts.get("plugin_args")),
            nprocs=opts.get("nprocs"),
            omp_nthreads=int(opts.get("omp_nthreads") or 1),
            mem_gb=parse_mem_gb(opts.get("mem")),
            stop_on_first_crash=bool(opts.get("stop_on_first_crash")),
        )
        task = opts.get("task") or "heal"
        lesion_from = opts.get("lesion_from")
        workflow = Workflow(
            task=task,
            # Absolute: nipype runs each node in its own folder, where a relative path means nothing.
            model=Path(opts["model"]).expanduser().absolute() if opts.get("model") else None,
            lesion_masks=_absolute(opts.get("lesion_masks")),
            lesion_mask=_absolute(opts.get("lesion_mask")),
            lesion_from=lesion_from[4:] if lesion_from and lesion_from.startswith("sub-") else lesion_from,
            sampling=sampling_from_options(opts, task),
            n_samples=int(opts.get("n_samples") or 1),
            device=check_device(opts.get("device") or "auto"),
            skull_stripped=bool(opts.get("skull_stripped")),
            assume_orientation=opts.get("assume_orientation"),
            mask_orientation=opts.get("mask_orientation"),
            mask_growth=opts.get("mask_growth") or "auto",
        )
        group = Group(
            task=opts.get("group_task"),
            preset=opts.get("preset"),
            train_steps=opts.get("train_steps"),
            batch_size=opts.get("batch_size"),
            model_name=opts.get("model_name") or "usb",
            resume=bool(opts.get("resume", True)),
            overwrite=bool(opts.get("overwrite")),
            ground_truth=opts.get("ground_truth"),
            n_generate=opts.get("n_generate"),
            masks=opts.get("masks"),
        )
        config = cls(execution, nipype, workflow, group)
        config.check(given)
        return config

    def check(self, given: Iterable[str]) -> None:
        """Options against each other: each given option must apply to this level and task."""
        if self.execution.level == "group" and self.group.task is None:
            raise UsageError(
                "the group level needs a task: add --group-task train, --group-task metrics or --group-task generate"
            )
        if self.workflow.lesion_mask is not None and self.workflow.lesion_from is not None:
            raise UsageError("--lesion-mask and --lesion-from both name the lesion to embed; give one")
        scope = self.scope
        for name in sorted(given):
            allowed = SCOPES.get(name)
            if allowed is not None and scope not in allowed:
                where = ", ".join(sorted(s.replace(":", " ") for s in allowed))
                raise UsageError(
                    f"{option_flag(name)} does not apply to the {scope.replace(':', ' ')} run; it is for: {where}"
                )


def _absolute(path) -> Path | None:
    return Path(path).expanduser().absolute() if path else None


def option_flag(name: str) -> str:
    """The command-line spelling of an option's parameter name."""
    special = {
        "no_acg": "--no-acg",
        "lcg_eta": "--eta",
        "resume": "--resume/--no-resume",
        "mem": "--mem",
        "fill_residual": "--fill-residual/--no-fill-residual",
    }
    return special.get(name, "--" + name.replace("_", "-"))


def sampling_from_options(opts: Mapping[str, Any], task: str) -> EditParameters:
    """The sampling options given on the command line, as the object ``usb_model`` takes; the
    rest stay None and take the checkpoint's values (heal resolves them per image, since the
    default mode depends on whether a mask exists)."""
    values = {key: opts.get(key) for key in ("t_start", "steps", "alpha0", "k", "ddim_eta")}
    if opts.get("band_mm"):
        values["band_mm"] = tuple(float(v) for v in opts["band_mm"])
    if task == "embed":
        values["lcg_eta"] = opts.get("lcg_eta")
    if task == "heal":
        values.update(
            mode=opts.get("heal_mode"),
            fill=opts.get("fill"),
            fill_residual=opts.get("fill_residual"),
            ae_passes=opts.get("ae_passes"),
            detect_threshold=opts.get("detect_threshold"),
            detect_min_ml=opts.get("detect_min_ml"),
        )
    if opts.get("no_acg"):
        values["acg"] = False
    return EditParameters(**{k: v for k, v in values.items() if v is not None})
