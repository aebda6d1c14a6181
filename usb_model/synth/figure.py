"""A figure of synthetic (lesioned, healthy) pairs, to look at what the model trains on.

Why: numbers cannot tell whether pseudo-lesions look like lesions in brains; a person can.
Run ``python -m usb_model.synth.figure docs/figures/synth_pairs.png`` (default: 12 pairs on the
160^3, 1 mm grid, eight T1w and four FLAIR, sizes from WMH-like spots to stroke-like
territories). Each pair is an axial slice through the lesion's largest cross-section: the
lesioned image, then the healthy ground truth with the lesion's outline in red.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from usb_model.config import GridConfig
from usb_model.synth.dataset import synth_triplet
from usb_model.synth.lesions import lesion_volume_ml
from usb_model.template import load_template

__all__ = ["make_figure", "main"]

#: (contrast, size, WMH-only) of the panels, in reading order.
PANELS = [
    ("T1w", "wmh", True),
    ("T1w", "small", False),
    ("T1w", "medium", False),
    ("T1w", "large", False),
    ("T1w", "small", False),
    ("T1w", "medium", False),
    ("T1w", "large", False),
    ("T1w", "stroke", False),
    ("FLAIR", "wmh", True),
    ("FLAIR", "small", False),
    ("FLAIR", "medium", False),
    ("FLAIR", "large", False),
]


def _pair(template, seed: int, contrast: str, size: str, wmh: bool, voxel_size):
    rng = np.random.default_rng([seed, 7919])
    return synth_triplet(
        template, rng, contrast=contrast, voxel_size=voxel_size, size=size, wmh_fraction=1.0 if wmh else 0.0
    )


def make_figure(out: Path, shape=(160, 160, 160), voxel_size=(1.0, 1.0, 1.0), seed: int = 0, n: int = 12) -> Path:
    """Render ``n`` pairs (cycling through ``PANELS``) to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    template = load_template(GridConfig(shape=tuple(shape), voxel_size=tuple(voxel_size)))
    cols = 4  # two pairs per row
    rows = int(np.ceil(n / 2))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), facecolor="black")
    for k in range(rows * 2):
        ax_les, ax_hea = axes[k // 2, 2 * (k % 2)], axes[k // 2, 2 * (k % 2) + 1]
        for ax in (ax_les, ax_hea):
            ax.set_axis_off()
        if k >= n:
            continue
        contrast, size, wmh = PANELS[k % len(PANELS)]
        sample = _pair(template, seed * 1000 + k, contrast, size, wmh, voxel_size)
        mask = sample["mask"]
        z = int(np.argmax(mask.sum(axis=(0, 1)))) if mask.any() else shape[2] // 2
        for ax, key in ((ax_les, "lesioned"), (ax_hea, "healthy")):
            ax.imshow(sample[key][:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
        if mask.any():
            ax_hea.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=0.6, origin="lower")
        vol = lesion_volume_ml(mask, voxel_size)
        label = f"{contrast} {'WMH-like' if wmh else size}: {vol:.1f} mL"
        ax_les.set_title(label, color="white", fontsize=7, loc="left")
        ax_hea.set_title("healthy (ground truth)", color="white", fontsize=7, loc="left")
    fig.suptitle(
        "usb_model.synth: synthetic lesioned / healthy pairs (axial, z through the lesion)", color="white", fontsize=9
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor="black")
    plt.close(fig)
    return out


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--grid", "shape", nargs=3, type=int, default=(160, 160, 160), show_default=True, help="Grid shape.")
@click.option("--voxel-size", nargs=3, type=float, default=(1.0, 1.0, 1.0), show_default=True, help="Voxel size (mm).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--pairs", "n", type=int, default=12, show_default=True)
def main(out: Path, shape, voxel_size, seed: int, n: int) -> None:
    """Write a PNG of synthetic lesioned/healthy pairs to OUT."""
    path = make_figure(out, shape=shape, voxel_size=voxel_size, seed=seed, n=n)
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
