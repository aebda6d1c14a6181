"""Regenerate the option tables of docs/usage.md from the click command.

    python docs/gen_usage.py            # rewrite the generated part of docs/usage.md
    python docs/gen_usage.py --check    # exit 1 when docs/usage.md is out of date

Only the text between the two GENERATED markers is rewritten; the rest of usage.md is prose.
The tables come from ``bids_usb.cli.cli.params`` (the same walk as the Boutiques descriptor in
``bids_usb.boutiques``), so a new option appears here by running this script, and
tests/test_boutiques.py fails while usage.md lacks it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

USAGE_MD = Path(__file__).resolve().parent / "usage.md"
BEGIN = "<!-- BEGIN GENERATED: python docs/gen_usage.py -->"
END = "<!-- END GENERATED -->"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _spellings(param: click.Option) -> list[str]:
    """Every spelling a user may type, except the underscored copies of dashed names."""
    names = list(dict.fromkeys([*param.opts, *param.secondary_opts]))
    out = []
    for name in names:
        if name.startswith("__"):
            continue
        if "_" in name and name.replace("_", "-") in names:
            continue
        out.append(name)
    return out


def _value(param: click.Parameter) -> str:
    ptype = param.type
    if getattr(param, "count", False):
        return "flag, repeatable (`-vv`)"
    if getattr(param, "is_flag", False):
        return "flag"
    if isinstance(ptype, click.Path):
        kind = "FILE" if not ptype.dir_okay else ("DIR" if not ptype.file_okay else "PATH")
        text = kind + (" (must exist)" if ptype.exists else "")
    elif isinstance(ptype, click.Choice):
        text = " \\| ".join(f"`{c}`" for c in ptype.choices)
    elif isinstance(ptype, (click.types.IntParamType, click.types.FloatParamType)):
        text = "INTEGER" if isinstance(ptype, click.types.IntParamType) else "NUMBER"
        if isinstance(ptype, click.types._NumberRangeBase):
            if ptype.min is not None:
                text += f" {'>' if ptype.min_open else '≥'} {ptype.min}"
            if ptype.max is not None:
                text += f" {'<' if ptype.max_open else '≤'} {ptype.max}"
    else:
        text = "TEXT"
    if getattr(param, "multiple", False):
        text += ", repeatable"
    return text


def _default(param: click.Parameter, command: click.Command) -> str:
    with click.Context(command) as ctx:
        value = param.get_default(ctx, call=False)
    if type(value).__name__ == "Sentinel" or value is None or value in ((), []) or callable(value):
        return ""
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return f"`{param.opts[0] if value else param.secondary_opts[0]}`"
        return "" if value is False else "on"
    if getattr(param, "count", False):
        return ""
    return f"`{value}`"


def render(command: click.Command | None = None) -> str:
    """The generated Markdown: arguments, options, and the options that print and exit."""
    from bids_usb.boutiques import ARGUMENT_HELP, run_params

    if command is None:
        from bids_usb.cli import cli as command
    from bids_usb import cli as cli_module

    lines = ["### Arguments", "", "| Argument | Value | Description |", "| --- | --- | --- |"]
    params = run_params(command)
    for p in params:
        if isinstance(p, click.Argument):
            value = " \\| ".join(f"`{v}`" for v in cli_module.LEVELS) if p.name == "analysis_level" else _value(p)
            lines.append(f"| `{p.name.upper()}` | {value} | {_cell(ARGUMENT_HELP.get(p.name, ''))} |")
    lines += ["", "### Options", "", "| Option | Value | Default | Description |", "| --- | --- | --- | --- |"]
    for p in params:
        if isinstance(p, click.Option):
            names = ", ".join(f"`{n}`" for n in _spellings(p))
            lines.append(f"| {names} | {_value(p)} | {_default(p, command)} | {_cell(p.help or '')} |")
    lines += ["", "### Options that print something and exit", "", "| Option | Description |", "| --- | --- |"]
    with click.Context(command, **command.context_settings) as ctx:
        every = command.get_params(ctx)
    for p in every:
        if isinstance(p, click.Option) and p.is_eager and not p.expose_value:
            names = ", ".join(f"`{n}`" for n in _spellings(p))
            lines.append(f"| {names} | {_cell(p.help or '')} |")
    lines.append("")
    lines.append("Options accept `--dashed-names` and `--underscored_names` alike (`--participant_label`).")
    return "\n".join(lines) + "\n"


def splice(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    start = text.index(BEGIN) + len(BEGIN)
    stop = text.index(END)
    return text[:start] + "\n" + block + text[stop:]


def generated_part(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = USAGE_MD.read_text()
    new = splice(text, render())
    if "--check" in argv:
        if new != text:
            print(f"{USAGE_MD} is out of date; run: python docs/gen_usage.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        USAGE_MD.write_text(new)
        print(f"updated {USAGE_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
