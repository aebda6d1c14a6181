"""The report's figures: slice mosaics drawn with matplotlib's Agg canvas, saved as PNG.

Conventions
- Every volume is brought to the closest RAS+ voxel order (``nib.as_closest_canonical``: a
  permutation and flips, no resampling) so that all figures read the same way whatever the
  file's orientation: neurological convention (the participant's left on the left of the
  panel), anterior at the top of axial panels, superior at the top of coronal and sagittal
  panels, anterior on the right of sagittal panels.
- Panels are drawn in millimetres (``imshow`` extents from the voxel sizes), so anisotropic
  voxels (e.g. 1 x 1 x 5 mm) keep their true shape.
- pyplot is never used: figures are plain ``matplotlib.figure.Figure`` objects on an Agg canvas,
  so nothing here touches a global backend or leaks figures between calls.
- Files are written atomically (temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from usb_model.atomic import atomic_write

LESION_COLOUR = "#ff2020"
REGION_COLOUR = "#ffd000"
BRAIN_COLOUR = "#7f7f7f"
TEMPLATE_OUTLINE_COLOUR = "#00e5ff"
TEMPLATE_WM_COLOUR = "#ff40ff"
TEXT_COLOUR = "#e8e8e8"
BACKGROUND = "black"

# Dark-centred diverging map for differences (zero = black, like the background of the grey
# panels): negative = blue -> cyan, positive = purple -> pink. Red and yellow stay free for the
# lesion and edit-region outlines.
DIFF_CMAP = LinearSegmentedColormap.from_list(
    "usb_diff",
    [
        (0.0, "#b8f0ff"),
        (0.2, "#1ea0ff"),
        (0.42, "#0a2a8a"),
        (0.5, "#000000"),
        (0.58, "#6a0a8a"),
        (0.8, "#e040d0"),
        (1.0, "#ffc8f4"),
    ],
)

_HALO = [patheffects.withStroke(linewidth=1.6, foreground="black")]

N_SLICES = 5
DPI = 100
WIDTH_IN = 9.0
LEFT_IN = 0.32  # row labels
RIGHT_IN = 0.78  # colour bars
TITLE_IN = 0.26  # block titles
LEGEND_IN = 0.30  # legend line at the top
BOTTOM_IN = 0.05
GAP = 0.04  # between panels, a fraction of a panel's width

ORIENTATIONS = (("axial", 2, "z"), ("coronal", 1, "y"), ("sagittal", 0, "x"))


# --- volumes ----------------------------------------------------------------------------------


@dataclass
class Volume:
    """A 3-D image in RAS+ voxel order."""

    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape  # type: ignore[return-value]


def load_ras(path: str | os.PathLike, dtype=np.float32) -> Volume:
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj)
    if data.ndim > 3:  # a 4-D file with one volume (or a stack: show the first)
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    data = np.asarray(data, dtype=dtype)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Volume(data=data, affine=img.affine, zooms=zooms)  # type: ignore[arg-type]


def load_mask(path: str | os.PathLike | None, like: Volume) -> np.ndarray | None:
    """A binary mask on ``like``'s grid, or None when absent or on another grid."""
    if not path:
        return None
    vol = load_ras(path)
    if vol.shape != like.shape or not np.allclose(vol.affine, like.affine, atol=1e-3):
        return None
    return vol.data > 0.5


def robust_range(
    values: np.ndarray, low: float = 0.5, high: float = 99.5, max_samples: int = 400_000
) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > max_samples:
        values = values[:: values.size // max_samples + 1]
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    return lo, hi


def bounding_box(mask: np.ndarray, zooms: Sequence[float], margin_mm: float = 4.0) -> tuple[slice, slice, slice]:
    """The box around ``mask`` grown by ``margin_mm`` (the whole volume if the mask is empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        pad = int(np.ceil(margin_mm / zooms[axis]))
        box.append(slice(max(0, idx[0] - pad), min(mask.shape[axis], idx[-1] + pad + 1)))
    return tuple(box)  # type: ignore[return-value]


def pick_slices(
    mask: np.ndarray,
    axis: int,
    zooms: Sequence[float],
    n: int = N_SLICES,
    spread: tuple[float, float] = (0.1, 0.9),
    min_gap_mm: float = 3.0,
) -> list[int]:
    """``n`` slice indices along ``axis`` through ``mask``: at evenly spaced quantiles of its
    mass (so they follow the mask, the middle one at its median). A mask too thin for ``n``
    distinct slices gets slices around its centre, ``min_gap_mm`` apart."""
    size = mask.shape[axis]
    others = tuple(a for a in range(3) if a != axis)
    profile = mask.sum(axis=others).astype(np.float64)
    if profile.sum() == 0:
        profile = np.ones(size)
    cdf = np.cumsum(profile) / profile.sum()
    picks = sorted({int(np.searchsorted(cdf, q)) for q in np.linspace(spread[0], spread[1], n)})
    step = max(1, int(round(min_gap_mm / zooms[axis])))
    if len(picks) < n or (picks[-1] - picks[0]) < step * (n - 1) / 2:
        centre = int(np.searchsorted(cdf, 0.5))
        start = int(np.clip(centre - step * (n // 2), 0, max(0, size - 1 - step * (n - 1))))
        picks = sorted({int(np.clip(start + step * i, 0, size - 1)) for i in range(n)})
    return picks


def slice_2d(data: np.ndarray, axis: int, index: int, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The panel's array, rows = display y (origin lower), columns = display x."""
    sl = list(box)
    sl[axis] = index
    return np.ascontiguousarray(data[tuple(sl)].T)


def panel_extent(
    axis: int, box: tuple[slice, slice, slice], zooms: Sequence[float]
) -> tuple[float, float, float, float]:
    ax_x, ax_y = [a for a in range(3) if a != axis]
    w = (box[ax_x].stop - box[ax_x].start) * zooms[ax_x]
    h = (box[ax_y].stop - box[ax_y].start) * zooms[ax_y]
    return (0.0, w, 0.0, h)


def world_coordinate(vol: Volume, axis: int, index: int) -> float:
    centre = (np.array(vol.shape, dtype=float) - 1) / 2
    centre[axis] = index
    return float((vol.affine @ np.append(centre, 1.0))[axis])


# --- layout -----------------------------------------------------------------------------------


@dataclass
class Block:
    """One orientation's rows of panels; a panel is ``width`` x ``height`` millimetres."""

    title: str
    rows: list[str]  # row labels
    width: float
    height: float


class Panel:
    """One slice's place in a row. A row is a single Axes in millimetres with the panels side by
    side (one Axes per panel would cost ~10 ms each just to build its unused tick machinery)."""

    def __init__(self, ax, col: int, width: float, height: float, gap: float = 0.0):
        self.ax, self.width, self.height = ax, width, height
        self.x0 = col * (width + gap)
        self.extent = (self.x0, self.x0 + width, 0.0, height)

    def image(self, arr: np.ndarray, **kwargs):
        return self.ax.imshow(arr, extent=self.extent, origin="lower", interpolation="nearest", aspect="auto", **kwargs)

    def grey(self, arr: np.ndarray, vmin: float, vmax: float):
        return self.image(arr, cmap="gray", vmin=vmin, vmax=vmax)

    def contour(self, mask2d: np.ndarray | None, colour: str, width: float = 0.9, style: str = "solid") -> None:
        if mask2d is None or not mask2d.any() or mask2d.all():
            return
        self.ax.contour(
            mask2d.astype(np.float32),
            levels=[0.5],
            colors=[colour],
            linewidths=width,
            linestyles=style,
            extent=self.extent,
            origin="lower",
        )

    def text(self, fx: float, fy: float, s: str, **kwargs) -> None:
        self.ax.text(
            self.x0 + fx * self.width,
            fy * self.height,
            s,
            color=TEXT_COLOUR,
            clip_on=False,
            path_effects=_HALO,
            **kwargs,
        )

    def annotate(self, axis: int, letter: str, coordinate: float, first: bool) -> None:
        self.text(0.03, 0.03, f"{letter}={coordinate:+.0f}", fontsize=6.5, va="bottom", ha="left")
        if first:
            lo, hi = ("P", "A") if axis == 0 else ("L", "R")
            self.text(0.02, 0.97, lo, fontsize=7, va="top", ha="left", fontweight="bold")
            self.text(0.98, 0.97, hi, fontsize=7, va="top", ha="right", fontweight="bold")


def _layout(blocks: list[Block], ncols: int, legend: bool) -> tuple[Figure, list[list[list[Panel]]], list[list], float]:
    """A figure with ``blocks`` stacked vertically; returns (figure, panels[block][row][col],
    colour-bar slots [block][row] as (left, bottom, width, height) in figure fractions, height)."""
    row_w = WIDTH_IN - LEFT_IN - RIGHT_IN
    panel_w = row_w / (ncols + GAP * (ncols - 1))  # inches
    height = BOTTOM_IN + (LEGEND_IN if legend else 0.0)
    for b in blocks:
        height += TITLE_IN + len(b.rows) * panel_w * b.height / max(b.width, 1e-6)
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    panels: list[list[list[Panel]]] = []
    slots: list[list] = []
    y = height - (LEGEND_IN if legend else 0.0)
    for b in blocks:
        y -= TITLE_IN
        fig.text(
            LEFT_IN / WIDTH_IN,
            (y + 0.06) / height,
            b.title,
            color=TEXT_COLOUR,
            fontsize=10,
            fontweight="bold",
            va="bottom",
            ha="left",
        )
        panel_h = panel_w * b.height / max(b.width, 1e-6)
        block_panels, block_slots = [], []
        for label in b.rows:
            y -= panel_h
            ax = fig.add_axes((LEFT_IN / WIDTH_IN, y / height, row_w / WIDTH_IN, panel_h / height))
            ax.set_axis_off()
            gap = GAP * b.width
            ax.set_xlim(0, ncols * b.width + (ncols - 1) * gap)
            ax.set_ylim(0, b.height)
            ax.set_autoscale_on(False)
            block_panels.append([Panel(ax, c, b.width, b.height, gap) for c in range(ncols)])
            fig.text(
                (LEFT_IN - 0.06) / WIDTH_IN,
                (y + panel_h / 2) / height,
                label,
                color=TEXT_COLOUR,
                fontsize=9,
                rotation=90,
                va="center",
                ha="right",
            )
            block_slots.append(
                (
                    (WIDTH_IN - RIGHT_IN + 0.08) / WIDTH_IN,
                    (y + panel_h * 0.1) / height,
                    0.12 / WIDTH_IN,
                    panel_h * 0.8 / height,
                )
            )
        panels.append(block_panels)
        slots.append(block_slots)
    return fig, panels, slots, height


def _legend(fig: Figure, height: float, entries: list[tuple[str, str, str]]) -> None:
    """A one-line legend at the top: (label, colour, linestyle)."""
    if not entries:
        return
    handles = [Line2D([], [], color=c, linestyle=ls, linewidth=1.6) for _, c, ls in entries]
    fig.legend(
        handles,
        [e[0] for e in entries],
        loc="upper left",
        bbox_to_anchor=(LEFT_IN / WIDTH_IN, 1.0),
        ncol=len(entries),
        frameon=False,
        fontsize=8.5,
        labelcolor=TEXT_COLOUR,
        handlelength=1.8,
        borderaxespad=0.2,
        columnspacing=1.4,
    )


def _colourbar(fig: Figure, slot, mappable, label: str) -> None:
    cax = fig.add_axes(slot)
    cb = fig.colorbar(mappable, cax=cax)
    cb.outline.set_edgecolor(TEXT_COLOUR)
    cb.ax.tick_params(colors=TEXT_COLOUR, labelsize=7, length=2)
    cb.set_label(label, color=TEXT_COLOUR, fontsize=7, labelpad=2)
    cb.ax.yaxis.get_offset_text().set(color=TEXT_COLOUR, fontsize=6)


def _block(title: str, rows: list[str], axis: int, box, zooms) -> Block:
    x0, x1, y0, y1 = panel_extent(axis, box, zooms)
    return Block(title, rows, x1 - x0, y1 - y0)


def save_figure(fig: Figure, path: Path) -> Path:
    """Render ``fig`` and write it as a 256-colour PNG (about a third of the RGB file's size;
    the grey ramps keep well over a hundred levels), atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    image = rgb.quantize(256, method=Image.Quantize.FASTOCTREE)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


# --- the figures ------------------------------------------------------------------------------


@dataclass
class EditData:
    """Everything the native-grid figures need, loaded once per image."""

    anat: Volume
    edited: Volume
    brain: np.ndarray
    region: np.ndarray | None
    lesion: np.ndarray | None
    uncertainty: Volume | None
    box: tuple[slice, slice, slice]
    slices: dict[int, list[int]]  # axis -> indices
    window: tuple[float, float]
    notes: list[str]
    anomaly: Volume | None = None
    given: np.ndarray | None = None  # heal: the mask as given, where its growth changed it


def load_edit_data(anat: str | os.PathLike, written: dict[str, str]) -> EditData:
    notes: list[str] = []
    a = load_ras(anat)
    e = load_ras(written["edited"])
    if e.shape != a.shape:
        raise ValueError(f"the edited image's grid {e.shape} differs from the input's {a.shape}")
    brain = load_mask(written.get("brain_mask"), a)
    if brain is None or not brain.any():
        notes.append("no usable brain mask: the grey scale and the crop use the input's non-zero voxels")
        brain = a.data > robust_range(a.data[a.data > 0])[0] if (a.data > 0).any() else np.ones(a.shape, bool)
    region = load_mask(written.get("edit_region"), a)
    lesion = load_mask(written.get("lesion") or written.get("detected"), a)
    maps = {}
    for key in ("uncertainty", "anomaly"):
        maps[key] = load_ras(written[key]) if written.get(key) else None
        if maps[key] is not None and maps[key].shape != a.shape:
            notes.append(f"the {key} map is not on the input's grid and is not shown")
            maps[key] = None
    unc = maps["uncertainty"]
    focus = next((m for m in (lesion, region) if m is not None and m.any()), None)
    if focus is None:
        notes.append("the edit region is empty: the slices are spread over the brain")
        focus = brain
    keep = brain | focus
    box = bounding_box(keep, a.zooms)
    slices = {axis: pick_slices(focus, axis, a.zooms) for _, axis, _ in ORIENTATIONS}
    window = robust_range(a.data[brain])
    given = load_mask(written.get("lesion_given"), a)
    return EditData(a, e, brain, region, lesion, unc, box, slices, window, notes, maps["anomaly"], given)


def edit_figure(d: EditData, path: Path) -> Path:
    """Input / edited / difference, three orientations, slices through the edit."""
    a, e, box = d.anat, d.edited, d.box
    diff = e.data - a.data
    inside = d.region if d.region is not None and d.region.any() else (diff != 0)
    lim = robust_range(np.abs(diff[inside]), 0, 99.5)[1] if inside.any() else 1.0
    lim = lim if lim > 0 else 1.0
    blocks = [
        _block(name.capitalize(), ["Input", "Edited", "Difference"], axis, box, a.zooms)
        for name, axis, _ in ORIENTATIONS
    ]
    ncols = max(len(v) for v in d.slices.values())
    fig, panels, slots, height = _layout(blocks, ncols, legend=True)
    legend = []
    if d.lesion is not None:
        legend.append(("lesion healed" if d.given is not None else "lesion", LESION_COLOUR, "solid"))
    if d.given is not None:
        legend.append(("lesion mask as given", LESION_COLOUR, "dotted"))
    if d.region is not None:
        legend.append(("edit region", REGION_COLOUR, "solid"))
    legend.append(("brain mask (difference rows)", BRAIN_COLOUR, "solid"))
    _legend(fig, height, legend)
    vmin, vmax = d.window
    for b, (_name, axis, letter) in enumerate(ORIENTATIONS):
        grey_im = diff_im = None
        for c, idx in enumerate(d.slices[axis]):
            region = slice_2d(d.region, axis, idx, box) if d.region is not None else None
            lesion = slice_2d(d.lesion, axis, idx, box) if d.lesion is not None else None
            given = slice_2d(d.given, axis, idx, box) if d.given is not None else None
            coordinate = world_coordinate(a, axis, idx)
            for r, vol in enumerate((a, e)):
                p = panels[b][r][c]
                grey_im = p.grey(slice_2d(vol.data, axis, idx, box), vmin, vmax)
                p.contour(region, REGION_COLOUR)
                p.contour(lesion, LESION_COLOUR)
                if r == 0:
                    p.contour(given, LESION_COLOUR, 0.8, "dotted")
                p.annotate(axis, letter, coordinate, c == 0)
            p = panels[b][2][c]
            diff_im = p.image(slice_2d(diff, axis, idx, box), cmap=DIFF_CMAP, vmin=-lim, vmax=lim)
            p.contour(slice_2d(d.brain, axis, idx, box), BRAIN_COLOUR, 0.6)
            p.contour(region, REGION_COLOUR, 0.7)
            p.contour(lesion, LESION_COLOUR, 0.7)
            p.annotate(axis, letter, coordinate, c == 0)
        _colourbar(fig, slots[b][0], grey_im, "intensity")
        _colourbar(fig, slots[b][2], diff_im, "edited − input")
    return save_figure(fig, path)


def uncertainty_figure(d: EditData, path: Path) -> Path:
    """The voxelwise standard deviation over samples on the input, slices through the edit."""
    if d.uncertainty is None:
        raise ValueError("no uncertainty map")
    return map_figure(d, d.uncertainty, "Uncertainty", "SD over samples", path)


def anomaly_figure(d: EditData, path: Path) -> Path:
    """The detection's anomaly map on the input, with the detected lesion outlined."""
    if d.anomaly is None:
        raise ValueError("no anomaly map")
    return map_figure(d, d.anomaly, "Anomaly", "|healed − input| (normalised)", path)


def map_figure(d: EditData, volume: Volume, title: str, label: str, path: Path) -> Path:
    """A non-negative map over the input, slices through the edit, with its colour bar."""
    a, u, box = d.anat, volume.data, d.box
    pos = u[u > 0]
    umax = robust_range(pos, 0, 99.5)[1] if pos.size else 1.0
    blocks = [_block(name.capitalize(), [title], axis, box, a.zooms) for name, axis, _ in ORIENTATIONS]
    ncols = max(len(v) for v in d.slices.values())
    fig, panels, slots, height = _layout(blocks, ncols, legend=True)
    legend = [("edit region", REGION_COLOUR, "solid")] if d.region is not None else []
    if d.lesion is not None:
        legend.insert(0, ("lesion", LESION_COLOUR, "dashed"))
    _legend(fig, height, legend)
    vmin, vmax = d.window
    for b, (_name, axis, letter) in enumerate(ORIENTATIONS):
        im = None
        for c, idx in enumerate(d.slices[axis]):
            p = panels[b][0][c]
            p.grey(slice_2d(a.data, axis, idx, box), vmin, vmax)
            im = p.image(np.ma.masked_less_equal(slice_2d(u, axis, idx, box), 0), cmap="inferno", vmin=0, vmax=umax)
            p.contour(slice_2d(d.region, axis, idx, box) if d.region is not None else None, REGION_COLOUR, 0.8)
            p.contour(
                slice_2d(d.lesion, axis, idx, box) if d.lesion is not None else None, LESION_COLOUR, 0.8, "dashed"
            )
            p.annotate(axis, letter, world_coordinate(a, axis, idx), c == 0)
        _colourbar(fig, slots[b][0], im, label)
    return save_figure(fig, path)


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def registration_figure(
    preproc_model: str | os.PathLike, template: str | os.PathLike, lesion_model: str | os.PathLike | None, path: Path
) -> Path:
    """The input on the model grid (what USB saw) with the template's outlines: its brain's
    edge (cyan) and its white-matter boundary (magenta)."""
    img = load_ras(preproc_model)
    tpl = load_ras(template)
    if tpl.shape != img.shape:
        raise ValueError(f"the template's grid {tpl.shape} differs from the model-grid input's {img.shape}")
    lesion = load_mask(lesion_model, img) if lesion_model else None
    t = tpl.data
    tbrain_level = 0.1 * robust_range(t[t > 0])[1] if (t > 0).any() else 0.5
    tbrain = t > tbrain_level
    # The WM boundary: Otsu's threshold on the brain's brighter part (above the CSF/GM split).
    inner = t[tbrain]
    wm_level = _otsu(inner[inner > _otsu(inner)]) if inner.size > 100 else None
    head = img.data > 0
    box = bounding_box(head | tbrain, img.zooms, margin_mm=3.0)
    ref = tbrain | head
    slices = {axis: pick_slices(ref, axis, img.zooms, spread=(0.18, 0.82)) for _, axis, _ in ORIENTATIONS}
    window = robust_range(img.data[head]) if head.any() else (0.0, 1.0)
    blocks = [_block(name.capitalize(), ["Input, model grid"], axis, box, img.zooms) for name, axis, _ in ORIENTATIONS]
    ncols = max(len(v) for v in slices.values())
    fig, panels, slots, height = _layout(blocks, ncols, legend=True)
    legend = [("template brain edge", TEMPLATE_OUTLINE_COLOUR, "solid")]
    if wm_level is not None:
        legend.append(("template white-matter edge", TEMPLATE_WM_COLOUR, "solid"))
    if lesion is not None:
        legend.append(("lesion", LESION_COLOUR, "dashed"))
    _legend(fig, height, legend)
    for b, (_name, axis, letter) in enumerate(ORIENTATIONS):
        im = None
        for c, idx in enumerate(slices[axis]):
            p = panels[b][0][c]
            im = p.grey(slice_2d(img.data, axis, idx, box), *window)
            ts = slice_2d(t, axis, idx, box)
            p.contour(ts > tbrain_level, TEMPLATE_OUTLINE_COLOUR, 0.8)
            if wm_level is not None:
                p.contour(ts > wm_level, TEMPLATE_WM_COLOUR, 0.6)
            p.contour(slice_2d(lesion, axis, idx, box) if lesion is not None else None, LESION_COLOUR, 0.8, "dashed")
            p.annotate(axis, letter, world_coordinate(img, axis, idx), c == 0)
        _colourbar(fig, slots[b][0], im, "intensity")
    return save_figure(fig, path)
