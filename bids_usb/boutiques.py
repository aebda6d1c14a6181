"""The Boutiques descriptor of ``bids_usb``, generated from the click command.

``descriptor()`` walks ``bids_usb.cli.cli.params`` (arguments and options, in order), so the
descriptor cannot drift from the command line: a new option appears in it (and in
``bids_usb --bids-exec-spec``) without any edit here. A parameter type this module does not
know how to describe raises ``TypeError`` instead of being skipped.

Mapping (Boutiques schema 0.5):

* a ``click.Path`` -> ``File`` (an input the app reads, file or directory), except the paths the
  app writes (:data:`WRITTEN_PATHS`) -> ``String``;
* ``click.Choice`` -> ``String`` with ``value-choices``; ``int``/``float`` (and their ranges)
  -> ``Number`` (``integer``, ``minimum``/``maximum``);
* a boolean flag -> ``Flag``; a ``--x/--no-x`` switch whose default is on is described by the
  flag that changes it (``--no-x``);
* a repeatable option (``multiple=True``) -> a list joined by commas (the app splits labels on
  commas and spaces);
* a fixed-length tuple of numbers (``--band-mm INNER OUTER``) -> a ``Number`` list of exactly that
  many entries, separated by spaces;
* a counting option (``-v``) -> a ``String`` whose choices are ``-v``, ``-vv``, ``-vvv``;
* options that print something and exit (``--version``, ``--bids-exec-spec``, ``--help``) are
  not inputs of a run and are left out.

The committed copy lives in ``resources/boutiques.json``; regenerate it with::

    bids_usb --bids-exec-spec > resources/boutiques.json
"""

from __future__ import annotations

import json
from typing import Any

import click

from usb_model import __version__

from . import errors
from .config import LEVELS
from .derivatives import CODE_URL

SCHEMA_VERSION = "0.5"
# Path parameters the app writes rather than reads: Boutiques ``String``, not ``File``.
WRITTEN_PATHS = frozenset({"output_dir", "work_dir"})
# Arguments whose valid values are checked in code rather than by a click.Choice (so that an
# unknown level exits with 17, not with a usage error).
ARGUMENT_CHOICES = {"analysis_level": LEVELS}
LIST_SEPARATOR = ","
COUNT_LEVELS = 3

# What each exit code means; every exit code of bids_usb.errors must be described here
# (tests/test_boutiques.py checks it).
EXIT_CODES = {
    1: "Unspecified failure: a workflow node crashed (see the crash files in the work directory), "
    "or bids-validator-deno is missing or crashed.",
    16: "BIDS validation of the input dataset failed (fix it, list files in .bidsignore, or pass --skip-bids-validation).",
    17: "Unknown analysis level (use participant or group).",
    18: "Entity filtering (--participant-label, --session-label, --bids-filter-file) selected no files.",
    64: "Usage error: a bad option or argument, an output or work directory inside the input dataset, a bad filter file.",
    65: "Data error: an input image, lesion mask or model exists but cannot be used (corrupt, NaN voxels, 4D, wrong space).",
    66: "No input: the dataset is valid but the images or the model this run needs are missing.",
    73: "The output could not be created.",
    74: "Input/output error.",
    130: "Aborted (interrupted by the user).",
}

OUTPUT_FILES = [
    (
        "dataset_description",
        "Dataset description",
        "[OUTPUT_DIR]/dataset_description.json",
        "The BIDS-Derivatives dataset description (GeneratedBy, SourceDatasets).",
    ),
    (
        "healed_images",
        "Healed images",
        "[OUTPUT_DIR]/sub-*/anat/*_desc-healed_*.nii.gz",
        "heal: the input with its lesion replaced by healthy-looking tissue, on the input grid (and on the model grid with space-/res-).",
    ),
    (
        "lesioned_images",
        "Lesioned images",
        "[OUTPUT_DIR]/sub-*/anat/*_desc-lesioned_*.nii.gz",
        "embed: the input with a lesion drawn in, on the input grid (and on the model grid with space-/res-).",
    ),
    (
        "edit_regions",
        "Edit regions",
        "[OUTPUT_DIR]/sub-*/anat/*_desc-editregion_mask.nii.gz",
        "The voxels that may differ from the input.",
    ),
    (
        "reports",
        "Participant reports",
        "[OUTPUT_DIR]/sub-*.html",
        "One visual report per participant (figures under sub-<label>/figures/).",
    ),
]


def _is_run_input(param: click.Parameter) -> bool:
    """False for options that print something and exit (they are not inputs of a run)."""
    return not (param.is_eager and not param.expose_value) and not getattr(param, "hidden", False)


def run_params(command: click.Command) -> list[click.Parameter]:
    """The parameters of a run, in the command's order (what the descriptor describes)."""
    return [p for p in command.params if _is_run_input(p)]


def _default(param: click.Parameter, command: click.Command) -> Any:
    with click.Context(command) as ctx:
        value = param.get_default(ctx, call=False)
    if type(value).__name__ == "Sentinel":  # click >= 8.2 marks "no default" with a sentinel
        return None
    if callable(value) or value is None or value is False or value in ((), []):
        return None
    return value


def _long_flag(param: click.Option, secondary: bool = False) -> str:
    """The dashed long spelling (``--work-dir``), else the first spelling."""
    names = param.secondary_opts if secondary else param.opts
    for name in names:
        if name.startswith("--") and "_" not in name:
            return name
    for name in names:
        if name.startswith("--"):
            return name
    return names[0]


def flag_of(param: click.Parameter) -> str | None:
    """The command-line flag the descriptor uses for ``param`` (None for arguments and counts)."""
    if isinstance(param, click.Argument) or getattr(param, "count", False):
        return None
    if param.is_flag and param.secondary_opts and _default_is_on(param):
        return _long_flag(param, secondary=True)
    return _long_flag(param)


def _default_is_on(param: click.Option) -> bool:
    with click.Context(click.Command("x")) as ctx:
        return param.get_default(ctx, call=False) is True


def input_id(param: click.Parameter) -> str:
    """The Boutiques id of ``param``: the argument's name, or the option's flag in snake case."""
    flag = flag_of(param)
    if flag is None:
        return param.name
    return flag.lstrip("-").replace("-", "_")


def aliases(param: click.Parameter) -> list[str]:
    """Other spellings of an option, without the underscored copies of dashed names."""
    if isinstance(param, click.Argument):
        return []
    main = flag_of(param)
    names = [*param.opts, *param.secondary_opts]
    out = []
    for name in names:
        if name == main or name in out:
            continue
        if "_" in name and name.replace("_", "-") in names:
            continue
        if name.startswith("__"):  # a malformed underscored copy of a --x/--no-x switch
            continue
        out.append(name)
    return out


def _number(spec: dict[str, Any], ptype: click.ParamType) -> None:
    spec["type"] = "Number"
    spec["integer"] = isinstance(ptype, click.types.IntParamType)
    if isinstance(ptype, click.types._NumberRangeBase):
        if ptype.min is not None:
            spec["minimum"] = ptype.min
            if ptype.min_open:
                spec["exclusive-minimum"] = True
        if ptype.max is not None:
            spec["maximum"] = ptype.max
            if ptype.max_open:
                spec["exclusive-maximum"] = True


def describe_type(param: click.Parameter, spec: dict[str, Any]) -> None:
    """Fill ``type`` (and choices, ranges) of one input from the click parameter."""
    ptype = param.type
    if getattr(param, "count", False):
        spec["type"] = "String"
        short = next((o for o in param.opts if not o.startswith("--")), param.opts[0])
        letter = short.lstrip("-")
        spec["value-choices"] = [f"-{letter * n}" for n in range(1, COUNT_LEVELS + 1)]
    elif getattr(param, "is_flag", False):
        spec["type"] = "Flag"
    elif isinstance(ptype, click.Path):
        spec["type"] = "String" if param.name in WRITTEN_PATHS else "File"
    elif isinstance(ptype, click.Choice):
        spec["type"] = "String"
        spec["value-choices"] = [str(c) for c in ptype.choices]
    elif isinstance(ptype, (click.types.IntParamType, click.types.FloatParamType)):
        _number(spec, ptype)
    elif isinstance(ptype, click.Tuple) and all(
        isinstance(t, (click.types.IntParamType, click.types.FloatParamType)) for t in ptype.types
    ):
        _number(spec, ptype.types[0])
        spec["list"] = True
        spec["list-separator"] = " "
        spec["min-list-entries"] = spec["max-list-entries"] = len(ptype.types)
    elif isinstance(ptype, click.types.StringParamType):
        spec["type"] = "String"
        if param.name in ARGUMENT_CHOICES:
            spec["value-choices"] = list(ARGUMENT_CHOICES[param.name])
    else:
        raise TypeError(
            f"{param.name}: no Boutiques mapping for the click type {ptype!r}; extend bids_usb.boutiques.describe_type"
        )


def _name(param: click.Parameter) -> str:
    flag = flag_of(param)
    text = (flag.lstrip("-") if flag else param.name).replace("-", " ").replace("_", " ")
    return text[:1].upper() + text[1:]


def describe_param(param: click.Parameter, command: click.Command) -> dict[str, Any]:
    ident = input_id(param)
    spec: dict[str, Any] = {
        "id": ident,
        "name": _name(param),
        "value-key": f"[{ident.upper()}]",
        "optional": not param.required,
    }
    describe_type(param, spec)
    help_text = " ".join((getattr(param, "help", None) or "").split())
    if isinstance(param, click.Argument):
        help_text = ARGUMENT_HELP.get(param.name, help_text)
    others = aliases(param)
    if others:
        help_text = f"{help_text} (also: {', '.join(others)})".strip()
    if help_text:
        spec["description"] = help_text
    flag = flag_of(param)
    if flag is not None:
        spec["command-line-flag"] = flag
    if getattr(param, "multiple", False):
        spec["list"] = True
        spec["list-separator"] = LIST_SEPARATOR
    default = _default(param, command)
    if default is not None and spec["type"] != "Flag" and not getattr(param, "count", False):
        spec["default-value"] = str(default) if spec["type"] in ("String", "File") else default
    return spec


ARGUMENT_HELP = {
    "bids_dir": "The root folder of the input BIDS dataset (read only: nothing is ever written there).",
    "output_dir": "Where the BIDS-Derivatives dataset is written (outside bids_dir, or below bids_dir/derivatives/).",
    "analysis_level": "participant: heal or embed each participant's images; group: train, metrics or generate.",
}


def error_codes() -> list[dict[str, Any]]:
    codes = sorted({cls.exit_code for cls in all_error_classes()} | set(EXIT_CODES))
    return [{"code": code, "description": EXIT_CODES[code]} for code in codes if code != 0]


def all_error_classes() -> list[type]:
    """Every BidsUsbError subclass the app can raise (errors.py and the validator)."""
    from . import validation  # noqa: F401 - defines ValidatorUnavailable

    seen, todo = [], [errors.BidsUsbError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def descriptor(command: click.Command) -> dict[str, Any]:
    """The Boutiques descriptor of the ``bids_usb`` command (schema 0.5), as a dict. The command
    is passed in (``bids_usb.cli`` calls this for ``--bids-exec-spec``), so this module never
    imports the CLI: imports run one way."""
    inputs = [describe_param(p, command) for p in run_params(command)]
    return {
        "name": "bids_usb",
        "tool-version": __version__,
        "description": "USB (Unified Synthetic Brain) lesion healing and embedding for BIDS datasets, "
        "a BIDS App: heal lesions (pathology to healthy) or embed them (healthy to pathology) "
        "in T1w or FLAIR images with a paired latent diffusion model; writes a BIDS-Derivatives dataset.",
        "author": "bids_usb developers",
        "url": CODE_URL,
        "command-line": " ".join(["bids_usb", *(spec["value-key"] for spec in inputs)]),
        "schema-version": SCHEMA_VERSION,
        "container-image": {"type": "docker", "image": f"bids_usb:{__version__}"},
        "inputs": inputs,
        "output-files": [
            {"id": i, "name": n, "path-template": t, "description": d, "optional": True} for i, n, t, d in OUTPUT_FILES
        ],
        "error-codes": error_codes(),
        "tags": {"domain": ["neuroimaging", "mri", "bids-app", "lesion"]},
    }


def dumps(command: click.Command) -> str:
    """The descriptor as text, exactly as ``bids_usb --bids-exec-spec`` prints it."""
    return json.dumps(descriptor(command), indent=2) + "\n"
