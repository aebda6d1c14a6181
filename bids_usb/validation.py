"""Run the BIDS validator (``bids-validator-deno``, from PyPI) and read its JSON report.

The validator is the console script that the ``bids-validator-deno`` wheel installs; it runs a
bundled copy of the validator (schema included) on the ``deno`` runtime wheel, so it needs no
network at run time. It picks the rules from ``DatasetType`` in ``dataset_description.json``:
a ``"derivative"`` dataset is checked with the derivatives rules (for instance
``SkullStripped`` is required in the sidecar of a derivative T1w) without any flag; with no
``DatasetType``, a ``GeneratedBy`` field is enough for the derivatives rules (measured with
3.0.2), while ``"DatasetType": "raw"`` gives the raw rules. Its
``--datasetTypes`` option is not used: in 3.0.2 it crashes (exit 1, no JSON) when the dataset's
type is not in the list.

Exit status of the validator: 0 without errors, 16 with errors, anything else is a crash.

Files the app expects in a raw dataset but BIDS does not define (fMRIPrep's
``_label-lesion_roi.nii.gz`` lesion masks) are passed to the validator as ``expected``: a
configuration file (``--config``, written to a temporary folder, never into the dataset) tells
it to ignore ``NOT_INCLUDED`` for those names, and only that code. The validator's glob syntax
takes paths relative to the root without a leading ``/`` (``sub-*/**/anat/*_roi.nii.gz``;
measured with 3.0.2: a leading ``/`` matches nothing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BidsUsbError, UsageError, ValidationFailed

__all__ = [
    "ValidatorIssue",
    "ValidatorReport",
    "ValidatorUnavailable",
    "assert_valid_bids",
    "find_validator",
    "run_bids_validator",
    "validate_or_raise",
    "validator_config",
]

VALIDATOR = "bids-validator-deno"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ValidatorUnavailable(BidsUsbError):
    """The validator is not installed, crashed, or gave no readable report (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class ValidatorIssue:
    code: str
    severity: str
    location: str | None = None  # relative to the dataset root, starting with "/"
    sub_code: str | None = None
    message: str | None = None
    dataset: str = ""  # "" for the validated dataset, else e.g. "derivatives/masks" (with -r)

    @property
    def where(self) -> str:
        loc = self.location or ""
        return f"{self.dataset.rstrip('/')}{loc}" if self.dataset else loc

    def __str__(self) -> str:
        code = f"{self.code}[{self.sub_code}]" if self.sub_code else self.code
        return f"{code} {self.where}".strip()


@dataclass
class ValidatorReport:
    bids_dir: Path
    command: list[str]
    returncode: int
    errors: list[ValidatorIssue] = field(default_factory=list)
    warnings: list[ValidatorIssue] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    code_messages: dict = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def one_line(self, limit: int = 3) -> str:
        """The first ``limit`` errors (grouped by code) in one line, for a log or an exception."""
        if not self.errors:
            return f"{self.bids_dir}: no BIDS errors ({len(self.warnings)} warnings)"
        by_code: dict[str, list[str]] = {}
        for issue in self.errors:
            code = f"{issue.code}[{issue.sub_code}]" if issue.sub_code else issue.code
            by_code.setdefault(code, [])
            if issue.where and issue.where not in by_code[code]:
                by_code[code].append(issue.where)
        parts = []
        for code, where in list(by_code.items())[:limit]:
            shown = ", ".join(where[:2]) + (f" (+{len(where) - 2} more)" if len(where) > 2 else "")
            parts.append(f"{code} ({shown})" if shown else code)
        more = len(by_code) - limit
        tail = f"; and {more} more error code{'s' if more != 1 else ''}" if more > 0 else ""
        n = len(self.errors)
        return f"{n} BIDS error{'s' if n != 1 else ''}: " + "; ".join(parts) + tail


def find_validator() -> str | None:
    """The ``bids-validator-deno`` script next to this Python first, then on ``PATH``."""
    bindir = Path(sys.executable).parent
    for name in (VALIDATOR, VALIDATOR + ".exe"):
        candidate = bindir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(VALIDATOR)


def _default_deno_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "deno"


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def _issues(block: dict, dataset: str) -> list[ValidatorIssue]:
    out = []
    for raw in (block.get("issues") or {}).get("issues") or []:
        location = raw.get("location")
        if not location and raw.get("affects"):
            location = raw["affects"][0]
        out.append(
            ValidatorIssue(
                code=str(raw.get("code", "UNKNOWN")),
                severity=str(raw.get("severity", "error")),
                location=location,
                sub_code=raw.get("subCode"),
                message=raw.get("issueMessage"),
                dataset=dataset,
            )
        )
    for key, sub in (block.get("derivativesSummary") or {}).items():
        name = "/".join(x for x in (dataset.strip("/"), str(key).strip("/")) if x)
        out.extend(_issues(sub, name))
    return out


def _code_messages(block: dict) -> dict:
    messages = dict((block.get("issues") or {}).get("codeMessages") or {})
    for sub in (block.get("derivativesSummary") or {}).values():
        for k, v in _code_messages(sub).items():
            messages.setdefault(k, v)
    return messages


def validator_config(expected: Iterable[str]) -> dict:
    """The validator's configuration that ignores ``NOT_INCLUDED`` for the ``expected`` globs."""
    return {"ignore": [{"code": "NOT_INCLUDED", "location": glob.lstrip("/")} for glob in expected]}


def run_bids_validator(
    bids_dir: str | os.PathLike,
    ignore_warnings: bool = True,
    recursive: bool = False,
    ignore_nifti_headers: bool = False,
    timeout: float | None = None,
    extra_args: Iterable[str] = (),
    expected: Iterable[str] = (),
) -> ValidatorReport:
    """Run ``bids-validator-deno --format json [--ignoreWarnings] [-r] DIR`` and parse it.

    ``expected``: globs of files the caller reads although BIDS does not define them; their
    ``NOT_INCLUDED`` errors are ignored (a ``--config`` file in a temporary folder).

    ``recursive`` adds ``-r``: datasets under ``DIR/derivatives/`` are validated too, and their
    issues carry ``dataset="derivatives/<name>"``. Raises :class:`UsageError` when ``bids_dir``
    is not a directory and :class:`ValidatorUnavailable` when the validator is missing, times
    out, crashes, or prints no JSON. Validation errors are returned, not raised (see
    :func:`validate_or_raise`).
    """
    root = Path(bids_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"{bids_dir} is not a directory; nothing to validate")
    root = root.resolve()
    exe = find_validator()
    if exe is None:
        raise ValidatorUnavailable(
            f"{VALIDATOR} is not installed (looked next to {sys.executable} and on PATH); "
            "install it (pip install bids-validator-deno) or pass --skip-bids-validation"
        )
    cmd = [exe, "--format", "json"]
    if ignore_warnings:
        cmd.append("--ignoreWarnings")
    if recursive:
        cmd.append("--recursive")
    if ignore_nifti_headers:
        cmd.append("--ignoreNiftiHeaders")
    cmd.extend(extra_args)

    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    tmp_cache: tempfile.TemporaryDirectory | None = None
    if not env.get("DENO_DIR") and not _writable(_default_deno_cache()):
        tmp_cache = tempfile.TemporaryDirectory(prefix="bids_usb_deno_")
        env["DENO_DIR"] = tmp_cache.name
    expected = list(expected)
    tmp_config: tempfile.TemporaryDirectory | None = None
    if expected:
        tmp_config = tempfile.TemporaryDirectory(prefix="bids_usb_validator_")
        config_file = Path(tmp_config.name) / "validator_config.json"
        config_file.write_text(json.dumps(validator_config(expected), indent=2))
        cmd.extend(["--config", str(config_file)])
    cmd.append(str(root))

    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ValidatorUnavailable(
            f"{VALIDATOR} did not finish on {root} within {timeout:g} s; "
            "pass --skip-bids-validation to go on without it"
        ) from exc
    except OSError as exc:
        raise ValidatorUnavailable(f"{VALIDATOR} could not be started ({exe}): {exc}") from exc
    finally:
        for tmp in (tmp_cache, tmp_config):
            if tmp is not None:
                tmp.cleanup()
    elapsed = time.monotonic() - start

    def crash(why: str) -> ValidatorUnavailable:
        err = _ANSI.sub("", proc.stderr or "").strip().splitlines()
        first = next((line.strip() for line in err if line.strip()), "")
        return ValidatorUnavailable(
            f"{VALIDATOR} {why} on {root} (exit {proc.returncode})"
            + (f": {first}" if first else "")
            + "; pass --skip-bids-validation to go on without it"
        )

    if proc.returncode not in (0, 16):
        raise crash("crashed")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise crash("printed no JSON report") from None
    if not isinstance(data, dict):
        raise crash("printed an unexpected JSON report")

    issues = _issues(data, "")
    errors = [i for i in issues if i.severity == "error"]
    warnings = [i for i in issues if i.severity != "error"]
    if proc.returncode == 16 and not errors:
        raise crash("reported failure without listing an error")
    return ValidatorReport(
        bids_dir=root,
        command=cmd,
        returncode=proc.returncode,
        errors=errors,
        warnings=warnings,
        summary=data.get("summary") or {},
        code_messages=_code_messages(data),
        elapsed=elapsed,
    )


def validate_or_raise(
    bids_dir: str | os.PathLike,
    recursive: bool = False,
    timeout: float | None = None,
    expected: Iterable[str] = (),
) -> ValidatorReport:
    """Validate ``bids_dir``; raise :class:`ValidationFailed` (exit 16) on any error.

    The message is one line: the number of errors, the first error codes with their files, and
    the ways out (fix, ``.bidsignore``, ``--skip-bids-validation``). ``expected``: as for
    :func:`run_bids_validator` (the app passes its raw lesion-mask names).
    """
    report = run_bids_validator(bids_dir, ignore_warnings=True, recursive=recursive, timeout=timeout, expected=expected)
    if report.errors:
        raise ValidationFailed(
            f"BIDS validation of {report.bids_dir} failed with {report.one_line()}; "
            f"fix the files, list files the validator should skip in "
            f"{report.bids_dir / '.bidsignore'}, or pass --skip-bids-validation"
        )
    return report


def assert_valid_bids(
    path: str | os.PathLike,
    recursive: bool = False,
    ignore_codes: Iterable[str] = (),
    expected: Iterable[str] = (),
) -> list[str]:
    """The validator's errors for ``path`` as strings (``"CODE[subCode] /location"``).

    Meant for tests (``assert assert_valid_bids(out) == []``). A derivatives dataset needs no
    flag: the validator applies the derivatives rules when ``dataset_description.json`` says
    ``"DatasetType": "derivative"``. ``recursive`` also checks datasets under
    ``path/derivatives/``. Codes in ``ignore_codes`` (``"CODE"`` or ``"CODE[subCode]"``) are
    left out. ``expected``: as for :func:`run_bids_validator`.
    """
    skip = set(ignore_codes)
    report = run_bids_validator(path, ignore_warnings=True, recursive=recursive, expected=expected)
    out = []
    for issue in report.errors:
        full = f"{issue.code}[{issue.sub_code}]" if issue.sub_code else issue.code
        if issue.code in skip or full in skip:
            continue
        out.append(str(issue))
    return out
