"""The documentation agrees with the command line: every example command parses, and every
option the usage and troubleshooting pages name exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from bids_usb.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Options of other programs that these pages quote (docker, apptainer, sbatch, torchrun, ...).
OTHER_TOOLS = {
    "--entrypoint",
    "--env",
    "--gpus",
    "--gres",
    "--nv",
    "--rm",
    "--dashed-names",
    "--underscored",
    "--participant",
    "--nproc-per-node",
    "--standalone",
}


def _options() -> set[str]:
    names = set()
    for param in cli.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return names | {"--help"}


def _example_commands() -> list[tuple[str, int, list[str]]]:
    """``bids_usb ARGS`` lines inside fenced code blocks, backslash continuations joined."""
    found = []
    for page in PAGES:
        in_code, pending, start = False, "", 0
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if not in_code:
                continue
            if not pending and not line.startswith("bids_usb "):
                continue
            if not pending:
                start = number
            pending += line.rstrip("\\").strip() + " "
            if line.rstrip().endswith("\\"):
                continue
            found.append((page.name, start, shlex.split(pending.split("#")[0])[1:]))
            pending = ""
    return found


EXAMPLES = _example_commands()


def test_the_pages_have_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("page,line,args", EXAMPLES, ids=[f"{p}:{n}" for p, n, _ in EXAMPLES])
def test_example_commands_parse(page, line, args):
    if any(a in ("BIDS_DIR", "bids_dir") for a in args) and any("|" in a or a.startswith("[") for a in args):
        pytest.skip("a synopsis, not a command")
    # A job script's shell variables ($SLURM_CPUS_PER_TASK) stand for values the shell fills in.
    # "$@" passes the script's own arguments on: none here.
    args = ["1" if re.fullmatch(r"\$\{?\w+\}?", a) else a for a in args if a not in ("$@", "$*")]
    try:
        cli.make_context("bids_usb", list(args))
    except click.exceptions.Exit:
        pass
    except click.BadParameter as exc:
        if "does not exist" not in exc.format_message():  # example paths are not on this machine
            pytest.fail(f"{page}:{line}: bids_usb {' '.join(args)}: {exc.format_message()}")
    except click.UsageError as exc:
        pytest.fail(f"{page}:{line}: bids_usb {' '.join(args)}: {exc.format_message()}")


@pytest.mark.parametrize("page", ["usage.md", "troubleshooting.md", "group.md"])
def test_options_named_in_the_docs_exist(page):
    text = (ROOT / "docs" / page).read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    unknown = sorted(named - _options() - OTHER_TOOLS)
    assert unknown == [], f"docs/{page} names options bids_usb does not have: {unknown}"
