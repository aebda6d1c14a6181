"""``usb-import-upstream``: the authors' published USB weights -> a bids_usb checkpoint.

    usb-import-upstream --lesion usb_lesion.pth --brain usb_brain.pth --vae vae.ckpt OUT_DIR

OUT_DIR is then what ``bids_usb ... --model OUT_DIR`` and ``USB.from_checkpoint(OUT_DIR)``
take. A file that cannot be used ends the command with one line naming the file and the tensor,
and exit code 65 (sysexits' EX_DATAERR, as the BIDS App uses for bad input data).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

EX_DATAERR = 65  # an input file exists but cannot be used
EX_UNAVAILABLE = 69  # a needed package is missing
EX_CANTCREAT = 73  # the output cannot be written

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--lesion", required=True, type=_FILE, help="The authors' USB_lesion denoiser (usb_lesion.pth).")
@click.option("--brain", required=True, type=_FILE, help="The authors' USB_brain denoiser (usb_brain.pth).")
@click.option("--vae", required=True, type=_FILE, help="The authors' autoencoder, a Lightning checkpoint (vae.ckpt).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option(
    "--grid",
    type=click.IntRange(1),
    default=160,
    show_default=True,
    help="Edge of the cubic model grid in voxels; the authors' models need 160.",
)
@click.option(
    "--voxel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Voxel size of the model grid in mm; the authors' models need 1.",
)
@click.option(
    "--num-head-channels",
    type=click.IntRange(1),
    default=None,
    help="Channels per attention head (default: one head per attention layer, as the authors').",
)
def main(out_dir, lesion, brain, vae, force, grid, voxel_size, num_head_channels):
    """Convert the authors' USB weights into a bids_usb checkpoint directory OUT_DIR."""
    from .convert import import_upstream
    from .pickles import UpstreamError

    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        _fail(f"{out_dir} exists and is not empty; pass --force to replace it", EX_CANTCREAT)
    try:
        out = import_upstream(
            lesion,
            brain,
            vae,
            out_dir,
            grid_shape=(grid,) * 3,
            voxel_mm=voxel_size,
            num_head_channels=num_head_channels,
        )
    except UpstreamError as exc:
        _fail(str(exc), EX_DATAERR)
    except ModuleNotFoundError as exc:
        _fail(f"{exc}; the template needs nilearn: pip install 'bids-usb[app]'", EX_UNAVAILABLE)
    except OSError as exc:
        _fail(f"cannot write {out_dir}: {exc}", EX_CANTCREAT)
    click.echo(f"wrote {out} (model card: {out / 'README.md'}); use it with --model {out}")


def _fail(message: str, code: int) -> None:
    click.echo(f"usb-import-upstream: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
