"""The Boutiques descriptor against the live click command, and the generated usage docs.

The descriptor is generated from ``bids_usb.cli.cli``; these tests hold it to the command from
the outside (they match inputs to options by the flags a user types, not through the
generator's own helpers), so an option added, removed or retyped in cli.py shows up here.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bids_usb import boutiques
from bids_usb.cli import LEVELS, cli, main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "resources" / "boutiques.json"
USAGE_MD = ROOT / "docs" / "usage.md"


@pytest.fixture(scope="module")
def desc() -> dict:
    return boutiques.descriptor(cli)


def _informational(param: click.Parameter) -> bool:
    return param.is_eager and not param.expose_value


def _match(param: click.Parameter, inputs: list[dict]) -> list[dict]:
    """The inputs that describe ``param``: by id for arguments and counters, else by flag."""
    if isinstance(param, click.Argument):
        return [i for i in inputs if i["id"] == param.name and "command-line-flag" not in i]
    if param.count:
        return [i for i in inputs if i["id"] == param.name]
    spellings = set(param.opts) | set(param.secondary_opts)
    return [i for i in inputs if i.get("command-line-flag") in spellings]


def test_every_option_is_an_input_and_nothing_else(desc):
    inputs = desc["inputs"]
    matched: list[str] = []
    for param in cli.params:
        found = _match(param, inputs)
        if _informational(param) or getattr(param, "hidden", False):
            assert not found, f"{param.name} prints and exits; it is not an input of a run"
            continue
        assert len(found) == 1, f"{param.name} ({getattr(param, 'opts', '')}) is described {len(found)} times"
        matched.append(found[0]["id"])
    extra = [i["id"] for i in inputs if i["id"] not in matched]
    assert not extra, f"inputs with no CLI option: {extra}"
    ids = [i["id"] for i in inputs]
    assert len(set(ids)) == len(ids)
    # The command line names every input once, in the order of the CLI.
    keys = desc["command-line"].split()
    assert keys[0] == "bids_usb"
    assert keys[1:] == [i["value-key"] for i in inputs]


def test_types_choices_defaults_match(desc):
    ctx = click.Context(cli)
    for param in cli.params:
        if _informational(param):
            continue
        (spec,) = _match(param, desc["inputs"])
        ptype = param.type
        assert spec["optional"] is (not param.required), param.name
        if isinstance(param, click.Option) and param.count:
            assert spec["type"] == "String" and spec["value-choices"][0] == "-v"
        elif isinstance(param, click.Option) and param.is_flag:
            assert spec["type"] == "Flag", param.name
            default_on = param.get_default(ctx, call=False) is True
            expected = param.secondary_opts if default_on else param.opts
            assert spec["command-line-flag"] in expected, f"{param.name}: the flag must change the default"
        elif isinstance(ptype, click.Path):
            assert spec["type"] in ("File", "String"), param.name
        elif isinstance(ptype, click.Choice):
            assert spec["type"] == "String" and spec["value-choices"] == list(ptype.choices), param.name
        elif isinstance(ptype, click.types.IntParamType):
            assert spec["type"] == "Number" and spec["integer"] is True, param.name
            if isinstance(ptype, click.IntRange) and ptype.min is not None:
                assert spec["minimum"] == ptype.min, param.name
        elif isinstance(ptype, click.types.FloatParamType):
            assert spec["type"] == "Number" and spec["integer"] is False, param.name
        elif isinstance(ptype, click.Tuple):  # --band-mm INNER OUTER: exactly that many numbers
            assert spec["type"] == "Number" and spec["list"] is True, param.name
            assert spec["min-list-entries"] == spec["max-list-entries"] == len(ptype.types), param.name
            continue
        else:
            assert spec["type"] == "String", param.name
        assert spec.get("list", False) is bool(getattr(param, "multiple", False)), param.name
        default = param.get_default(ctx, call=False)
        plain = type(default).__name__ != "Sentinel" and default is not None and not isinstance(default, (bool, tuple))
        if plain and spec["type"] != "Flag" and not getattr(param, "count", False):
            assert spec["default-value"] == default, param.name
        else:
            assert "default-value" not in spec, param.name
        if isinstance(param, click.Option) and param.help:
            assert " ".join(param.help.split()) in spec["description"], param.name


def test_arguments(desc):
    by_id = {i["id"]: i for i in desc["inputs"]}
    assert by_id["bids_dir"]["type"] == "File" and not by_id["bids_dir"]["optional"]
    assert by_id["output_dir"]["type"] == "String"  # written, not read
    assert by_id["analysis_level"]["value-choices"] == list(LEVELS)
    assert by_id["work_dir"]["type"] == "String"


def test_error_codes_cover_every_error_class(desc):
    described = {e["code"] for e in desc["error-codes"]}
    for cls in boutiques.all_error_classes():
        assert cls.exit_code in described, (
            f"{cls.__name__} exits with {cls.exit_code}, which the descriptor does not describe"
        )
    assert {16, 17, 18, 64, 65, 66} <= described


def test_committed_copy_is_current():
    assert COMMITTED.is_file(), "run: bids_usb --bids-exec-spec > resources/boutiques.json"
    assert COMMITTED.read_text() == boutiques.dumps(cli), (
        "resources/boutiques.json is stale; run: bids_usb --bids-exec-spec > resources/boutiques.json"
    )


def test_bids_exec_spec_prints_it(capsys):
    assert main(["--bids-exec-spec"]) == 0
    out = capsys.readouterr().out
    assert out == boutiques.dumps(cli)
    assert json.loads(out)["name"] == "bids_usb"


def test_bids_exec_spec_from_the_shell():
    """The real entry point, in a fresh interpreter (no arguments needed, exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bids_usb", "--bids-exec-spec"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == COMMITTED.read_text()


def test_schema_validation(desc, tmp_path):
    pytest.importorskip("boutiques", reason="pip install boutiques")
    from boutiques import bosh

    path = tmp_path / "descriptor.json"
    path.write_text(json.dumps(desc))
    bosh(["validate", str(path)])  # raises DescriptorValidationError when invalid


def test_invocation_round_trip(desc, tmp_path):
    """A Boutiques invocation becomes a command line that the CLI parses into the same values."""
    pytest.importorskip("boutiques", reason="pip install boutiques")
    from boutiques import bosh

    path = tmp_path / "descriptor.json"
    path.write_text(json.dumps(desc))
    invocation = {
        "bids_dir": "/data/bids",
        "output_dir": "/data/out",
        "analysis_level": "participant",
        "participant_label": ["01", "sub-02"],
        "skip_bids_validation": True,
        "work_dir": "/scratch/work",
        "task": "embed",
        "n_samples": 4,
        "alpha0": 20.5,
        "band_mm": [0.5, 3],
        "no_resume": True,
        "verbose": "-vv",
    }
    inv = tmp_path / "invocation.json"
    inv.write_text(json.dumps(invocation))
    result = bosh(["exec", "simulate", "-i", str(inv), str(path)])
    command = result.shell_command
    words = shlex.split(command)
    assert words[0] == "bids_usb"
    ctx = cli.make_context("bids_usb", words[1:])
    p = ctx.params
    assert (str(p["bids_dir"]), str(p["output_dir"]), p["analysis_level"]) == ("/data/bids", "/data/out", "participant")
    from bids_usb.config import parse_labels

    assert parse_labels(p["participant_label"], "sub-", "--participant-label") == ("01", "02")
    assert p["skip_bids_validation"] is True and str(p["work_dir"]) == "/scratch/work"
    assert p["task"] == "embed" and p["n_samples"] == 4 and p["alpha0"] == 20.5 and p["band_mm"] == (0.5, 3.0)
    assert p["resume"] is False and p["verbose"] == 2
    assert p["seed"] == 0 and p["device"] == "auto"  # defaults the descriptor passes along


def test_generated_from_the_command_not_a_list():
    """A new option appears without any edit of bids_usb.boutiques; an unknown type fails loudly."""

    @click.command()
    @click.argument("bids_dir", type=click.Path())
    @click.option("--new-thing", type=click.FloatRange(0, 1), default=0.5, help="Something new.")
    def extended(**_):
        pass

    spec = boutiques.descriptor(extended)
    (new,) = [i for i in spec["inputs"] if i["id"] == "new_thing"]
    assert new == {
        "id": "new_thing",
        "name": "New thing",
        "value-key": "[NEW_THING]",
        "optional": True,
        "type": "Number",
        "integer": False,
        "minimum": 0,
        "maximum": 1,
        "description": "Something new.",
        "command-line-flag": "--new-thing",
        "default-value": 0.5,
    }

    @click.command()
    @click.option("--log", type=click.File("w"))
    def odd(**_):
        pass

    with pytest.raises(TypeError, match="no Boutiques mapping"):
        boutiques.descriptor(odd)


def _gen_usage():
    spec = importlib.util.spec_from_file_location("gen_usage", ROOT / "docs" / "gen_usage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_usage_md_is_current():
    gen = _gen_usage()
    text = USAGE_MD.read_text()
    assert gen.generated_part(text) == gen.render(), "docs/usage.md is stale; run: python docs/gen_usage.py"
    for param in cli.params:
        if isinstance(param, click.Option):
            assert any(f"`{name}`" in text for name in param.opts), f"docs/usage.md lacks {param.opts[0]}"
