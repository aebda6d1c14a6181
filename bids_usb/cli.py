"""The command line: ``bids_usb bids_dir output_dir {participant,group} [options]``.

Options are spelled as fMRIPrep spells them (both ``-`` and ``_`` forms). Every failure ends
with one line on stderr, ``bids_usb: error: <file>: <what is wrong>; <the fix>``, and an exit
code from the BIDS Execution specification (see ``bids_usb.errors``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import click
from click.core import ParameterSource

from usb_model import __version__

from .config import LEVELS, RunConfig
from .errors import BidsUsbError, DataError, NoInput, UnknownLevel, UsageError


class _NargsPlus(click.Option):
    """``--participant-label 01 02 03``: the values after the flag up to the next option, as
    fMRIPrep's ``nargs="+"`` takes them (click options take one value per flag otherwise)."""

    def add_to_parser(self, parser, ctx):
        result = super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None:
                continue
            process = option.process

            def greedy(value, state, process=process):
                process(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    process(state.rargs.pop(0), state)

            option.process = greedy
        return result


def _opt(*names, **kw):
    """An option under both its dashed and underscored spellings, as fMRIPrep accepts."""
    spelled = []
    for name in names:
        spelled.append(name)
        if name.startswith("--") and "-" in name[2:]:
            spelled.append("--" + name[2:].replace("-", "_"))
    return click.option(*spelled, **kw)


def _band(ctx, param, value):
    """--band-mm INNER OUTER: a band that fades needs OUTER beyond INNER."""
    if value is not None and value[1] <= value[0]:
        raise click.BadParameter(
            f"OUTER ({value[1]:g}) must exceed INNER ({value[0]:g}), e.g. --band-mm 0 1 for no band"
        )
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("analysis_level")
@_opt(
    "--participant-label",
    multiple=True,
    cls=_NargsPlus,
    help="Participants to process, with or without 'sub-' (e.g. --participant-label 01 02), or a file of them "
    "(a value with a '.' or '/': --participant-label participants.txt).",
)
@_opt("--session-label", multiple=True, cls=_NargsPlus, help="Sessions to process, with or without 'ses-'.")
@_opt(
    "--bids-filter-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="JSON of pybids queries per image kind, as in fMRIPrep ({'t1w': {...}}).",
)
@_opt("--skip-bids-validation", is_flag=True, help="Do not run bids-validator-deno on the input dataset.")
@_opt(
    "--bids-database-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A folder for pybids' index of bids_dir, built by the first run and reused by later ones "
    "(array tasks share one index instead of each indexing the whole dataset). Created if absent.",
)
@_opt(
    "-w",
    "--work-dir",
    type=click.Path(path_type=Path),
    help="Where intermediate results are cached (resumable). Default: <output_dir>/../work/bids_usb",
)
@_opt(
    "--nprocs",
    "--nthreads",
    type=click.IntRange(1, None),
    default=None,
    help="Processes nipype may run at once (default: all cores).",
)
@_opt("--omp-nthreads", type=click.IntRange(1, None), default=None, help="Threads per process for ANTs and PyTorch.")
@_opt(
    "--mem",
    "--mem-mb",
    "mem",
    default=None,
    help="Memory nipype may plan with, in MB unless a unit is given (16000, 16GB), as fMRIPrep reads it.",
)
@_opt(
    "--task",
    type=click.Choice(["heal", "embed"]),
    default="heal",
    show_default=True,
    help="heal: lesion -> healthy; embed: draw a lesion into a healthy brain.",
)
@_opt(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="USB checkpoint directory (default: the bundled demo model); the authors' weights after "
    "usb-import-upstream (docs/upstream.md).",
)
@_opt(
    "--lesion-masks",
    type=click.Path(path_type=Path),
    default=None,
    help="A BIDS-Derivatives dataset holding lesion masks (Type: Lesion).",
)
@_opt(
    "--lesion-mask",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="embed: one lesion mask in the template space (MNI152NLin2009aSym), any grid, drawn into every brain.",
)
@_opt(
    "--lesion-from",
    default=None,
    help="embed: draw the lesion of this participant (e.g. sub-01, from its lesion mask, mapped through its own registration) "
    "into every brain; or 'generate': a lesion generated by the model for each brain (paired sampling, the candidate whose "
    "brain is closest to this one).",
)
@_opt(
    "--heal-mode",
    type=click.Choice(["auto", "mask", "detect", "acg"]),
    default=None,
    help=(
        "heal: 'mask' regenerates the given lesion; 'detect' finds lesions first (no mask); 'acg' is the "
        "paper's mask-free healing; 'auto' (default): mask when a lesion mask exists, else detect."
    ),
)
@_opt(
    "--fill",
    type=click.Choice(["auto", "graft", "wm", "local", "lift", "none"]),
    default=None,
    help="heal (mask, detect): what the lesion holds before USB refines it: a template graft, a white-matter fill, "
    "the surrounding tissue interpolated ('local'), the lesion's own voxels lifted to it ('lift'), "
    "'auto' (per lesion: a small CSF-dark one continued smoothly from the tissue at its edge, read on the mask as "
    "given; the white-matter fill for a subtle one or one inside white matter, unless it lies in grey matter and "
    "is dark 2 mm inside its mask (a lacune under a generous mask: continued from its grey matter); else the "
    "graft), "
    "or the lesion itself (default: the model's).",
)
@_opt(
    "--mask-growth",
    type=click.Choice(["auto", "grid", "image", "none"]),
    default=None,
    help="heal with a mask: grow it to the lesion it points at: 'grid' by half the voxel of the coarser grid it was "
    "drawn on, 'image' by the neighbouring voxels the image shows as lesion, 'auto' (default) both, then each small "
    "CSF-dark lesion (a lacune) fitted to the image, which can drop voxels that look like its tissue; the mask "
    "healed is written as the output's lesion mask, the growth in its sidecar.",
)
@click.option(
    "--fill-residual/--no-fill-residual",
    default=None,
    help="heal (mask, detect): inside the lesion, the fill made on the scan's own grid plus the model's change to it "
    "(decode(healed) - decode(filled)), instead of the decoded healed brain (default: the model's).",
)
@_opt(
    "--ae-passes",
    type=click.Choice(["edit", "full"]),
    default=None,
    help="heal with a mask: the autoencoder's passes over the edit region's box ('edit', default: the output keeps "
    "the input's voxels elsewhere; boxes cut into tiles that fit --mem or the host's memory; lesion PSNR within "
    "0.03 dB of 'full' on the healing benchmark) or over the whole grid ('full', the paper's way). acg and detect "
    "modes always pass over the whole grid.",
)
@_opt(
    "--detect-threshold",
    type=click.FloatRange(0, None),
    default=None,
    help="heal --heal-mode detect: anomaly (normalised intensity) above which a voxel is lesion (default: the model's).",
)
@_opt(
    "--detect-min-ml",
    type=click.FloatRange(0, None),
    default=None,
    help="heal --heal-mode detect: smallest detected lesion kept, in ml (default: the model's).",
)
@_opt(
    "--band-mm",
    type=(click.FloatRange(0, None), click.FloatRange(0, None)),
    default=None,
    callback=_band,
    metavar="INNER OUTER",
    help="The blend band around the lesion, in mm: the edit at full weight up to INNER from it, fading to none at "
    "OUTER; beyond it every voxel is the input's (default: the model's; 0 2 unless it says otherwise).",
)
@_opt(
    "--steps",
    type=click.IntRange(1, None),
    default=None,
    help="Denoising steps of the edit (the stride is t_start / steps, rounded up).",
)
@_opt(
    "--t-start",
    type=click.IntRange(1, None),
    default=None,
    help="Noise level the edit starts from (paper: 300 heal, 500 embed).",
)
@_opt("--alpha0", type=float, default=None, help="ACG strength alpha0 (paper: 20).")
@_opt("--k", "k", type=float, default=None, help="ACG decay k (paper: 0.5).")
@_opt("--eta", "lcg_eta", type=float, default=None, help="LCG eta for embed (paper: 1).")
@_opt("--ddim-eta", type=float, default=None, help="DDIM stochasticity (0: deterministic).")
@_opt("--no-acg", is_flag=True, help="Turn Anatomy Consistency Guidance off (an ablation).")
@_opt(
    "--n-samples",
    type=click.IntRange(1, None),
    default=1,
    show_default=True,
    help="Samples per image; > 1 also writes an uncertainty map.",
)
@_opt(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the sampler's noise and of ANTs' registration: the same seed gives the same output on the same device.",
)
@_opt(
    "--assume-orientation",
    type=click.Choice(["sform", "qform", "voxel"]),
    default=None,
    help=(
        "Images whose qform and sform codes are both 0 have no known orientation and are refused; this reads "
        "them from the sform matrix, the qform quaternion, or the voxel sizes alone (LAS) instead."
    ),
)
@_opt(
    "--mask-orientation",
    type=click.Choice(["image", "header"]),
    default=None,
    help=(
        "A lesion mask with its image's grid but a header that orders or flips the axes differently is refused "
        "(placed by its header it would be mirrored); image: its voxels lie on the image's grid; header: its "
        "header is right."
    ),
)
@_opt("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_opt("--skull-stripped", is_flag=True, help="The inputs are already skull-stripped: skip deepbet.")
@_opt("--plugin", default=None, help="nipype execution plugin (MultiProc by default; Linear, SLURM, SGE, ...).")
@_opt(
    "--plugin-args",
    default=None,
    help='JSON object (or file) of plugin arguments, e.g. \'{"sbatch_args": "-p short"}\'.',
)
@_opt(
    "--stop-on-first-crash",
    is_flag=True,
    help="Stop at the first step that fails, instead of finishing every other step first.",
)
@_opt(
    "--group-task",
    type=click.Choice(["train", "metrics", "generate"]),
    default=None,
    help="group level: train a model on the dataset's brains, compute cohort metrics, or generate a synthetic cohort.",
)
@_opt("--preset", default=None, help="train: a preset name (tiny, demo, paper) or a config JSON (default: demo).")
@_opt("--train-steps", default=None, help="train: steps per stage, e.g. 'autoencoder=2000,lesion=3000,brain=3000'.")
@_opt(
    "--batch-size",
    type=click.IntRange(1, None),
    default=None,
    help="train/generate: volumes per batch (default: the config's).",
)
@_opt(
    "--model-name",
    default="usb",
    show_default=True,
    help="train: the checkpoint is written to OUTPUT_DIR/models/<name>.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="train: continue from the training state in OUTPUT_DIR/models/<name>.",
)
@_opt("--overwrite", is_flag=True, help="train: replace a checkpoint directory that cannot be resumed.")
@_opt(
    "--ground-truth",
    type=click.Path(path_type=Path),
    default=None,
    help="metrics: a derivatives dataset with the healthy ground truth (e.g. from usb-synth-dataset).",
)
@_opt(
    "--n-generate",
    type=click.IntRange(1, None),
    default=None,
    help="generate: number of pairs (default: one per mask with --masks, else 8).",
)
@_opt(
    "--masks",
    type=click.Path(path_type=Path),
    default=None,
    help="generate: a folder or BIDS dataset of lesion masks; one brain is generated per mask.",
)
@click.option(
    "--bids-exec-spec",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, _p, v: _print_exec_spec(ctx, v),
    help="Print the Boutiques descriptor of this command and exit.",
)
@click.option("-v", "--verbose", count=True, help="More log output (repeat for more).")
@click.version_option(__version__, "--version", prog_name="bids_usb")
def cli(**opts):
    """USB lesion healing and embedding for BIDS datasets (a BIDS App).

    \b
    BIDS_DIR        the input dataset (read only: nothing is ever written there)
    OUTPUT_DIR      where the BIDS-Derivatives dataset is written
    ANALYSIS_LEVEL  participant | group
    """
    level = opts["analysis_level"]
    if level not in LEVELS:
        raise UnknownLevel(f"analysis level {level!r} is unknown; use one of: {', '.join(LEVELS)}")
    ctx = click.get_current_context()
    given = [name for name in opts if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    config = RunConfig.from_options(opts, given)
    _configure_logging(config.execution.verbose)
    if level == "participant":
        from .run import run_participant

        return run_participant(config)
    from .group import run_group

    return run_group(config)


def _print_exec_spec(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .boutiques import dumps

    click.echo(dumps(ctx.command), nl=False)
    ctx.exit(0)


def _configure_logging(verbose: int) -> None:
    """One logger on stderr: bids_usb's own progress and warnings by default (INFO), the
    libraries' only from -v on; stdout is left to the paths of what was written."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    for name in ("bids_usb", "usb_model"):  # their progress lines show by default
        logging.getLogger(name).setLevel(min(level, logging.INFO))
    if verbose < 2:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    from .interrupt import Interrupted, handle_signals

    try:
        with handle_signals():
            result = cli.main(args=argv, prog_name="bids_usb", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (Interrupted, click.exceptions.Abort) as exc:
        cause = exc if isinstance(exc, Interrupted) else exc.__cause__  # click wraps Ctrl-C in Abort
        if isinstance(cause, Interrupted):
            click.echo(
                f"bids_usb: error: stopped by {cause}; finished steps are kept in the work directory, "
                "run the same command again to resume",
                err=True,
            )
            return cause.exit_code
        click.echo("bids_usb: aborted", err=True)
        return 130
    except click.exceptions.ClickException as exc:
        # click's usage errors (bad option, missing argument) are usage errors: 64, not click's 2.
        click.echo(f"bids_usb: error: {exc.format_message()}", err=True)
        return UsageError.exit_code
    except BidsUsbError as exc:
        click.echo(f"bids_usb: error: {exc}", err=True)
        return exc.exit_code
    return int(result or 0)


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["cli", "main", "entrypoint", "DataError", "NoInput"]
