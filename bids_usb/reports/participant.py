"""The participant report: ``<output_dir>/sub-<label>.html`` and ``sub-<label>/figures/*.png``.

The page is plain HTML with inline CSS (no scripts, no network), written atomically. Per image:
the edit (input / edited / difference mosaics through the lesion), the registration check on
the model grid, the uncertainty map (``n_samples`` > 1), the parameters, the model, the
timings and the warnings; then a methods paragraph for the whole participant and the
software versions. A figure that fails to render is replaced by an error box (and a warning):
the report never costs the participant its derivatives.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

from usb_model.atomic import write_text

from ..derivatives import bids_name, parse_entities

LOGGER = logging.getLogger("bids_usb.reports")

STAGES = ("prepare", "bias_correct", "skull_strip", "register", "to_model_grid", "usb", "to_native", "derivatives")
STAGE_LABELS = {
    "prepare": "Prepare (checks, lesion onto the input's grid, RAS)",
    "bias_correct": "N4 bias-field correction on the head",
    "skull_strip": "Skull stripping, N4 again on the brain",
    "register": "Affine registration to the template",
    "to_model_grid": "Resampling onto the model grid",
    "usb": "USB edit",
    "to_native": "Back to the native grid, composite",
    "derivatives": "Writing derivatives",
}
PARAMETER_LABELS = {
    "task": "heal (pathology → healthy) or embed (healthy → pathology)",
    "t_start": "diffusion step the edit starts from",
    "stride": "timesteps per DDIM step on the way down",
    "alpha0": "Anatomy Consistency Guidance strength α₀",
    "k": "Anatomy Consistency Guidance decay k",
    "ddim_eta": "DDIM stochasticity η (0 = deterministic)",
    "acg": "Anatomy Consistency Guidance on",
    "lcg": "Lesion Consistency Guidance on",
    "lcg_eta": "Lesion Consistency Guidance η",
    "mode": "healing mode: mask (the given lesion is regenerated), detect (lesions found first), acg (the paper's mask-free healing)",
    "fill": "what the lesion held before USB refined it (graft: the template; wm: white matter; none)",
    "band_mm": "blend band: full weight within the first distance of the lesion, none beyond the second (mm)",
    "detect_t_start": "detection: start of the free healing pass whose departure from the input is the anomaly map",
    "detect_threshold": "detection: anomaly above which a voxel is lesion (normalised intensity)",
    "detect_min_ml": "detection: smallest lesion kept (ml)",
    "seed": "random seed",
    "n_samples": "samples drawn (the result is their mean)",
}
SOFTWARE = (
    ("bids_usb", None),
    ("nipype", "nipype"),
    ("ANTsPy", "antspyx"),
    ("deepbet", "deepbet"),
    ("PyTorch", "torch"),
    ("MONAI", "monai"),
    ("nibabel", "nibabel"),
    ("NumPy", "numpy"),
    ("matplotlib", "matplotlib"),
)
REFERENCES = {
    "usb": (
        "Wang J, Liu P. USB: Unified Synthetic Brain Framework for Bidirectional Pathology–Healthy Generation and "
        "Editing. Code: https://github.com/jhuldr/USB"
    ),
    "n4": (
        "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: improved N3 bias correction. "
        "IEEE Transactions on Medical Imaging. 2010;29(6):1310–1320. doi:10.1109/TMI.2010.2046908"
    ),
    "ants": (
        "Avants BB, Tustison NJ, Song G, Cook PA, Klein A, Gee JC. A reproducible evaluation of ANTs similarity metric "
        "performance in brain image registration. NeuroImage. 2011;54(3):2033–2044. doi:10.1016/j.neuroimage.2010.09.025"
    ),
    "deepbet": (
        "Fisch L, Zumdick S, Barkhau C, Emden D, Ernsting J, Leenings R, Sarink K, Winter NR, Risse B, Dannlowski U, "
        "Hahn T. deepbet: fast brain extraction of T1-weighted MRI using convolutional neural networks. Computers in "
        "Biology and Medicine. 2024;179:108845. doi:10.1016/j.compbiomed.2024.108845"
    ),
    "mni2009": (
        "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate atlases "
        "for pediatric studies. NeuroImage. 2011;54(1):313–327. doi:10.1016/j.neuroimage.2010.07.033"
    ),
    "templateflow": (
        "Ciric R, Thompson WH, Lorenz R, Goncalves M, MacNicol EE, Markiewicz CJ, Halchenko YO, Ghosh SS, "
        "Gorgolewski KJ, Poldrack RA, Esteban O. TemplateFlow: FAIR-sharing of multi-scale, multi-species brain "
        "models. Nature Methods. 2022;19:1568–1571. doi:10.1038/s41592-022-01681-2"
    ),
    "nipype": (
        "Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. Nipype: a flexible, lightweight "
        "and extensible neuroimaging data processing framework in Python. Frontiers in Neuroinformatics. 2011;5:13. "
        "doi:10.3389/fninf.2011.00013"
    ),
}
CONTRASTS = {
    "T1w": "T1-weighted",
    "T2w": "T2-weighted",
    "FLAIR": "FLAIR",
    "PDw": "proton-density-weighted",
    "T2starw": "T2*-weighted",
}


@dataclass
class ImageReport:
    """What the report needs to know about one processed image."""

    name: str  # e.g. "sub-01_ses-1_T1w"
    anat: Path  # the input file
    written: dict[str, str]  # role -> derivative path (see bids_usb.outputs)
    template: Path  # the model's template T1w on the model grid, same grid as preproc_model
    task: str  # "heal" or "embed"
    parameters: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    model: dict[str, Any] = field(default_factory=dict)  # {"Name", "SHA256", "Contrast", ...}
    warnings: list[str] = field(default_factory=list)


# --- names ------------------------------------------------------------------------------------


def _figure_stem(image: ImageReport) -> tuple[dict[str, Any], str]:
    """(entities, suffix) of the input file name as pybids parses it, without ``desc``."""
    parsed = parse_entities(image.anat)
    suffix = parsed.get("suffix") or "T1w"
    entities = {k: v for k, v in parsed.items() if k not in ("suffix", "extension", "datatype", "desc")}
    if "subject" not in entities:  # not a BIDS name: keep the file's stem as the subject
        entities = {"subject": re.sub(r"[^a-zA-Z0-9]", "", image.name) or "image"}
    return entities, suffix


def _figure_name(image: ImageReport, desc: str, space: str | None = None) -> str:
    entities, suffix = _figure_stem(image)
    return bids_name({**entities, "space": space, "desc": desc}, suffix, ".png")


def _space(path: str | None) -> str | None:
    return parse_entities(path).get("space") if path else None


def _anchor(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "-", text)


# --- formatting -------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {sec:02d} s"


def _table(
    rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None, cls: str = "kv", raw: bool = False
) -> str:
    out = [f'<table class="{cls}">']
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = [c if raw else _esc(c) for c in row]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _relative(path: str | os.PathLike, start: Path) -> str:
    try:
        rel = os.path.relpath(path, start)
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel.startswith("..") else rel


def software_versions(version: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for label, dist in SOFTWARE:
        if dist is None:
            found[label] = version
            continue
        try:
            found[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[label] = None
    return found


# --- methods ----------------------------------------------------------------------------------


def _composite_constants() -> tuple[float, float, float] | None:
    """(inner mm, outer mm, change threshold) of the native composite (bids_usb.native)."""
    try:
        from ..native import CHANGE_THRESHOLD, INNER_MM, OUTER_MM
    except Exception:  # pragma: no cover - ANTs missing: the paragraph says less
        return None
    return float(INNER_MM), float(OUTER_MM), float(CHANGE_THRESHOLD)


def methods_paragraph(image: ImageReport, version: str, versions: dict[str, str | None], plural: bool = False) -> str:
    """Plain text describing exactly what was done to ``image`` (same text for same settings);
    ``plural``: the text describes several images processed the same way."""
    p = image.parameters
    _, suffix = _figure_stem(image)
    contrast = CONTRASTS.get(suffix, suffix)
    v = {k: (f" {val}" if val else "") for k, val in versions.items()}
    name = image.model.get("Name", "unknown")
    sha = str(image.model.get("SHA256", "") or "")
    model_id = f'"{name}"' + (f" (SHA256 {sha[:12]}…)" if sha else "")
    skull_stripped = bool(p.get("skull_stripped", False))
    has_lesion = "lesion" in image.written
    the = f"Each {contrast} image" if plural else f"The {contrast} image"
    s = [
        f"{the} was processed with bids_usb {version}, a BIDS App whose workflow is built with Nipype{v['nipype']} (Gorgolewski et al., 2011). "
        "It was reoriented to RAS+ and corrected for intensity non-uniformity with N4 (Tustison et al., 2010) "
        f"as implemented in ANTs (ANTsPy{v['ANTsPy']}; Avants et al., 2011). "
    ]
    if skull_stripped:
        s.append(
            "The input was already skull-stripped; its non-zero voxels (holes filled) were taken as the brain mask. "
        )
    else:
        s.append(f"The brain was extracted with deepbet{v['deepbet']} (Fisch et al., 2024). ")
    tpl = image.model.get("Template") or {}
    copy = {"TemplateFlow": "TemplateFlow's copy (Ciric et al., 2022)", "nilearn": "nilearn's copy"}.get(
        str(tpl.get("Checkpoint", "")), ""
    )
    template = "the model's template" + (
        f", MNI152NLin2009aSym (ICBM 2009a nonlinear symmetric; Fonov et al., 2011) in {copy}," if copy else ""
    )
    s.append(
        f"The brain was then aligned to {template} with an affine transform (ANTs, Mattes mutual information"
        + (", the lesion excluded from the cost function" if has_lesion and image.task == "heal" else "")
        + "), resampled onto the model's grid, and its intensities were normalised to [0, 1]. "
    )
    t_start, stride, eta = p.get("t_start"), p.get("stride"), p.get("ddim_eta")
    ddim = []
    if isinstance(t_start, (int, float)) and isinstance(stride, (int, float)) and stride > 0:
        ddim.append(f"{int(t_start) // int(stride) + 1} steps")
    if stride is not None:
        ddim.append(f"stride {_fmt(stride)}")
    if eta is not None:
        ddim.append(f"η = {_fmt(eta)}")
    sampler = "DDIM sampling" + (f" ({', '.join(ddim)})" if ddim else "")
    acg = (
        f"Anatomy Consistency Guidance (ACG; α₀ = {_fmt(p.get('alpha0', '?'))}, k = {_fmt(p.get('k', '?'))})"
        if p.get("acg", True)
        else None
    )
    engine = "PyTorch" + v["PyTorch"] + (f" and MONAI{v['MONAI']}" if versions.get("MONAI") else "")
    usb = f"USB, the Unified Synthetic Brain framework (Wang & Liu), a paired latent diffusion model, with the model {model_id} run in {engine}"
    if image.task == "heal" and p.get("mode") in ("mask", "detect"):
        found = ""
        if p.get("mode") == "detect":
            found = (
                f"No lesion mask was given: lesions were first detected as the voxels where a free healing pass from diffusion step "
                f"{_fmt(p.get('detect_t_start'))} departed from the input by more than {_fmt(p.get('detect_threshold'))} (normalised intensity), "
                f"in connected regions of at least {_fmt(p.get('detect_min_ml'))} ml. "
            )
        s.append(
            f"{found}The lesion was healed with {usb}: it was first filled ({_esc(str(p.get('fill')))} fill), the filled image's latent was noised to "
            f"diffusion step {_fmt(t_start)} and denoised back to step 0 with {sampler} under the healthy (empty-lesion) condition, "
            "the lesion left free to be regenerated and "
            + (f"{acg} holding the rest of the anatomy. " if acg else "the rest held to the input. ")
            + (
                # --fill-residual (the default): the model's change is laid onto the fill made on the scan's grid.
                "Inside the lesion the fill, made again on the participant's own grid, plus the model's change to it (the decoded "
                "healed minus the decoded filled image, bounded by the fill's local intensity range) was used; around it, the input "
                "plus the difference between the decoded healed and the decoded input latents, so that the autoencoder's own "
                "reconstruction error does not enter the result. "
                if p.get("fill_residual")
                else "Inside the lesion the decoded healed brain was used; around it, the input plus the difference between the "
                "decoded healed and the decoded input latents, so that the autoencoder's own reconstruction error does not enter "
                "the result. "
            )
        )
    elif image.task == "heal":
        s.append(
            f"The lesion was healed with {usb}: the image's latent was noised to diffusion step {_fmt(t_start)} and denoised back to step 0 with {sampler} "
            "under the healthy (empty-lesion) condition, "
            + (
                f"with {acg} pulling the result towards the input's anatomy wherever the model agreed with it. "
                if acg
                else "without anatomy consistency guidance. "
            )
        )
    else:
        lcg = f"Lesion Consistency Guidance (LCG; η = {_fmt(p.get('lcg_eta', '?'))})" if p.get("lcg", True) else None
        guidance = [g for g in (acg, lcg) if g]
        s.append(
            f"A lesion was embedded with {usb}: the healthy image's latent was noised to diffusion step "
            f"{_fmt(t_start)} and denoised back to step 0 with {sampler}, "
            "conditioned on the latent of the target lesion mask, "
            + (
                f"with {' and '.join(guidance)}, so that the anatomy outside the lesion is preserved while the lesion's voxels are free to change. "
                if guidance
                else "without consistency guidance. "
            )
        )
    n = p.get("n_samples", 1)
    seed = p.get("seed")
    seed_txt = f" with random seed {seed}" if seed is not None else ""
    if isinstance(n, int) and n > 1:
        s.append(
            f"In total, {n} samples were drawn{seed_txt}; the result is their voxelwise mean, and their "
            "voxelwise standard deviation is reported as an uncertainty map. "
        )
    else:
        s.append(f"One sample was drawn{seed_txt}. ")
    consts = _composite_constants()
    if has_lesion or image.task == "embed":
        region = "the lesion mask"
    elif consts:
        region = f"the voxels the model changed by more than {consts[2]:.0%} of the brain's bright-tissue intensity (no lesion mask was given)"
    else:
        region = "the voxels the model changed (no lesion mask was given)"
    band = f" (full weight within {consts[0]:g} mm, falling linearly to zero at {consts[1]:g} mm)" if consts else ""
    s.append(
        "The change (edited minus input) was mapped back onto the participant's native grid with the inverse "
        "affine, brought back to the input's intensity units and bias field, "
        f"and blended into the original image around {region}, with a blend band{band}; every voxel outside this edit region keeps its original value."
    )
    if str(name).lower() == "demo":
        s.append(
            ' Note: the model "demo" bundled with bids_usb is a small demonstration model; its results illustrate the pipeline only '
            "and must not be used for clinical purposes or to draw scientific conclusions."
        )
    return "".join(s)


# --- the page ---------------------------------------------------------------------------------

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="bids_usb $version">
<title>bids_usb report: sub-$subject</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2125; background: #fafafa; line-height: 1.45; }
nav { position: sticky; top: 0; background: #20262e; color: #eee; padding: 0.5em 1.5em; z-index: 1; font-size: 0.92em; }
nav a { color: #9cd2ff; margin-right: 1.2em; text-decoration: none; }
main { max-width: 1000px; margin: 0 auto; padding: 0 1.5em 3em; }
h1 { margin: 0.8em 0 0.2em; } h2 { border-bottom: 2px solid #20262e; padding-bottom: 0.15em; margin-top: 2em; }
h3 { margin: 1.4em 0 0.4em; color: #303840; }
section.image { margin-top: 1em; }
figure { margin: 0.4em 0 1em; } figure img { max-width: 100%; height: auto; display: block; border-radius: 3px; background: #000; }
figcaption { font-size: 0.88em; color: #4a5058; margin-top: 0.35em; }
table { border-collapse: collapse; margin: 0.3em 0 0.8em; font-size: 0.92em; }
td, th { border: 1px solid #d3d7dc; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #eceff2; } tr.total td { font-weight: bold; background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "SFMono-Regular", Consolas, monospace; font-size: 0.9em; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.35em 0.8em; margin: 0.3em 0; }
.error { background: #fde2e2; border-left: 4px solid #c62828; padding: 0.35em 0.8em; margin: 0.3em 0; }
.ok { color: #2e7d32; } .note { color: #4a5058; font-size: 0.92em; }
.methods { background: #fff; border: 1px solid #d3d7dc; padding: 0.8em 1em; }
</style>
</head>
<body>
<nav><strong>sub-$subject</strong> &nbsp; $nav</nav>
<main>
<h1>Participant sub-$subject</h1>
$summary
$images
<section id="methods">
<h2>Methods</h2>
<p class="note">A description of the processing that can be pasted into a manuscript (edit it as needed; cite the references below).</p>
$methods
<h3>References</h3>
<ol class="references">$references</ol>
</section>
<section id="about">
<h2>About</h2>
$about
</section>
</main>
</body>
</html>
""")


def _figure_html(src: str | None, alt: str, error: str | None, caption: str = "") -> str:
    if error:
        return f'<div class="error">This figure could not be drawn: {_esc(error)}</div>'
    return f'<figure><img src="{_esc(quote(src or ""))}" alt="{_esc(alt)}" loading="lazy"><figcaption>{caption}</figcaption></figure>'


def _timings_table(timings: dict[str, float]) -> str:
    if not timings:
        return '<p class="note">No timings were recorded.</p>'
    order = [s for s in STAGES if s in timings] + [s for s in timings if s not in STAGES]
    total = sum(float(timings[s]) for s in order if math.isfinite(float(timings[s])))
    rows = []
    for stage in order:
        sec = float(timings[stage])
        share = f"{100 * sec / total:.0f} %" if total > 0 and math.isfinite(sec) else ""
        rows.append(
            f"<tr><td><code>{_esc(stage)}</code></td><td>{_esc(STAGE_LABELS.get(stage, ''))}</td><td "
            f'class="num">{_esc(_duration(sec))}</td><td class="num">{share}</td></tr>'
        )
    rows.append(
        f'<tr class="total"><td>total</td><td></td><td class="num">{_esc(_duration(total))}</td><td class="num">100 %</td></tr>'
    )
    return (
        '<table class="timings"><thead><tr><th>stage</th><th></th><th>time</th><th>share</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def _stats_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "lesion_ml" in stats:
        rows.append(("Lesion volume", f"{stats['lesion_ml']:.2f} mL"))
    if "region_ml" in stats:
        rows.append(("Edit region volume", f"{stats['region_ml']:.2f} mL"))
    if "changed_ml" in stats:
        rows.append(("Voxels changed", f"{stats['changed_ml']:.2f} mL"))
    if "outside" in stats:
        rows.append(("Voxels changed outside the edit region", str(stats["outside"])))
    if "voxel" in stats:
        rows.append(("Voxel size", stats["voxel"]))
    return rows


def _image_section(
    image: ImageReport,
    figs: dict[str, tuple[str | None, str | None]],
    stats: dict[str, Any],
    output_dir: Path,
    warnings: list[str],
) -> str:
    a = _anchor(image.name)
    verb = "healed" if image.task == "heal" else "embedded"
    out = [f'<section class="image" id="{a}"><h2>{_esc(image.name)}</h2>']
    rows = [("Input", f"<code>{_esc(image.anat)}</code>"), ("Task", _esc(f"{image.task} (lesion {verb})"))]
    rows += [(_esc(k), _esc(v)) for k, v in _stats_rows(stats)]
    out.append(_table(rows, raw=True))

    out.append(f'<h3 id="{a}-edit">Edit: input, edited and difference</h3>')
    out.append(
        _figure_html(
            *_fig(figs, "edit"),
            caption=(
                "Rows per orientation: the input, the edited image (same grey scale: the 0.5–99.5th percentiles of the input's brain) and the difference "
                "(edited − input; blue: darker, pink: brighter). Outlines: <span style='color:#d00'>lesion</span>, "
                "<span style='color:#b08a00'>edit region</span> (the only voxels allowed to change), grey: brain mask. "
                "Slices follow the lesion (or the edit region); numbers are world coordinates in mm; neurological convention (left on the left)."
            ),
        )
    )
    out.append(f'<h3 id="{a}-registration">Registration to the model template</h3>')
    out.append(
        _figure_html(
            *_fig(figs, "registration"),
            caption=(
                "The input as USB saw it (bias-corrected, skull-stripped, affinely registered, on the model grid) with the template's outlines: "
                "<span style='color:#00a5b8'>brain edge</span> and <span style='color:#c020c0'>white-matter edge</span>. "
                "The outlines should follow the image's brain boundary and its grey/white boundary; a shifted, "
                "rotated or scaled outline means a failed registration."
            ),
        )
    )
    out.append(f'<h3 id="{a}-uncertainty">Uncertainty</h3>')
    if "uncertainty" in figs:
        out.append(
            _figure_html(
                *_fig(figs, "uncertainty"),
                caption=(
                    f"Voxelwise standard deviation over the {_esc(image.parameters.get('n_samples', 'several'))} samples "
                    "(input intensity units) over the input, inside the edit region. "
                    "High values mark where the samples disagree, i.e. where the edited image is least determined by the data."
                ),
            )
        )
    else:
        out.append(
            '<p class="note">No uncertainty map: one sample was drawn (use more than one sample to get one).</p>'
        )

    if image.written.get("anomaly"):
        out.append(f'<h3 id="{a}-detection">Lesion detection</h3>')
        found = (
            "The detected lesion (red, dashed) is what was healed."
            if image.written.get("detected")
            else ("Nothing exceeded the threshold: no lesion was detected and the output is the input, bit for bit.")
        )
        p = image.parameters
        out.append(
            _figure_html(
                *_fig(figs, "anomaly"),
                caption=(
                    f"No lesion mask was given, so USB looked for lesions: the anomaly map is how far a free healing pass departs from the input "
                    f"(|decode(healed) − decode(input)|, normalised intensity); voxels above {_esc(_fmt(p.get('detect_threshold')))} in connected "
                    f"components of at least {_esc(_fmt(p.get('detect_min_ml')))} ml are the detected lesion. {found}"
                ),
            )
        )

    out.append(f'<h3 id="{a}-parameters">Parameters</h3>')
    prm = [
        (f"<code>{_esc(k)}</code>", _esc(_fmt(v)), _esc(PARAMETER_LABELS.get(k, "")))
        for k, v in image.parameters.items()
    ]
    if "task" not in image.parameters:
        prm.insert(0, ("<code>task</code>", _esc(image.task), _esc(PARAMETER_LABELS["task"])))
    out.append(_table(prm, header=("parameter", "value", "meaning"), cls="params", raw=True))

    out.append(f'<h3 id="{a}-model">Model</h3>')
    mrows = []
    for k, v in image.model.items():
        if str(k).upper() == "SHA256" and v:
            mrows.append((_esc(k), f'<code title="{_esc(v)}">{_esc(str(v)[:12])}…</code>'))
        else:
            mrows.append((_esc(k), _esc(_fmt(v))))
    out.append(_table(mrows, raw=True) if mrows else '<p class="note">No model information.</p>')
    if str(image.model.get("Name", "")).lower() == "demo":
        out.append(
            '<div class="warn">The bundled model "demo" is a small demonstration model: not for clinical use, and not for drawing scientific conclusions.</div>'
        )

    out.append(f'<h3 id="{a}-timings">Timings</h3>')
    out.append(_timings_table(image.timings))

    out.append(f'<h3 id="{a}-warnings">Warnings</h3>')
    if warnings:
        out.append("".join(f'<div class="warn">{_esc(w)}</div>' for w in warnings))
    else:
        out.append('<p class="ok">No warnings.</p>')

    out.append(f'<h3 id="{a}-outputs">Outputs</h3>')
    orow = []
    for role, path in image.written.items():
        rel = _relative(path, output_dir)
        link = (
            f'<a href="{_esc(quote(rel))}">{_esc(rel)}</a>' if not os.path.isabs(rel) else f"<code>{_esc(rel)}</code>"
        )
        orow.append((f"<code>{_esc(role)}</code>", link))
    out.append(_table(orow, header=("role", "file"), raw=True))
    out.append("</section>")
    return "\n".join(out)


def _fig(figs: dict[str, tuple[str | None, str | None]], key: str) -> tuple[str | None, str, str | None]:
    src, err = figs.get(key, (None, "not drawn"))
    return src, key, err


def _edit_stats(data) -> dict[str, Any]:
    import numpy as np

    vox_ml = float(np.prod(data.anat.zooms)) / 1000.0
    stats: dict[str, Any] = {"voxel": " × ".join(f"{z:g}" for z in data.anat.zooms) + " mm"}
    if data.lesion is not None:
        stats["lesion_ml"] = float(data.lesion.sum()) * vox_ml
    changed = data.edited.data != data.anat.data
    stats["changed_ml"] = float(changed.sum()) * vox_ml
    if data.region is not None:
        stats["region_ml"] = float(data.region.sum()) * vox_ml
        stats["outside"] = int((changed & ~data.region).sum())
    return stats


def _render_image(
    image: ImageReport, fig_dir: Path, html_dir: Path, used: set[str]
) -> tuple[dict[str, tuple[str | None, str | None]], dict[str, Any], list[str]]:
    """Draw an image's figures; returns ({key: (relative src, error)}, stats, extra warnings)."""
    from . import figures as F

    figs: dict[str, tuple[str | None, str | None]] = {}
    extra: list[str] = []
    stats: dict[str, Any] = {}

    def name_for(desc: str, space: str | None = None) -> str:
        name = _figure_name(image, desc, space)
        if name in used:  # two images with the same file name (should not happen within BIDS)
            name = f"{_anchor(image.name)}_desc-{desc}.png"
        used.add(name)
        return name

    def draw(key: str, fn, *args) -> None:
        path = fig_dir / name_for(key, _space(image.written.get("preproc_model")) if key == "registration" else None)
        try:
            fn(*args, path)
            figs[key] = (Path(os.path.relpath(path, html_dir)).as_posix(), None)
        except Exception as exc:  # a broken figure must not lose the rest of the report
            LOGGER.warning("report figure %s of %s failed: %s", key, image.name, exc, exc_info=True)
            figs[key] = (None, f"{type(exc).__name__}: {exc}")
            extra.append(f"The {key} figure could not be drawn ({type(exc).__name__}: {exc}).")

    data = None
    try:
        data = F.load_edit_data(image.anat, image.written)
    except Exception as exc:
        LOGGER.warning("report: could not load the images of %s: %s", image.name, exc, exc_info=True)
        figs["edit"] = (None, f"{type(exc).__name__}: {exc}")
        extra.append(f"The edit figures could not be drawn ({type(exc).__name__}: {exc}).")
    if data is not None:
        extra.extend(f"Report: {n}." for n in data.notes)
        stats = _edit_stats(data)
        if stats.get("outside"):
            extra.append(f"{stats['outside']} voxel(s) differ from the input outside the edit region.")
        draw("edit", F.edit_figure, data)
        if image.written.get("uncertainty"):
            if data.uncertainty is not None:
                draw("uncertainty", F.uncertainty_figure, data)
        if image.written.get("anomaly") and data.anomaly is not None:
            draw("anomaly", F.anomaly_figure, data)
    if image.written.get("preproc_model"):
        draw(
            "registration",
            F.registration_figure,
            image.written["preproc_model"],
            image.template,
            image.written.get("lesion_model"),
        )
    else:
        figs["registration"] = (None, "no model-grid input (preproc_model) was written")
    return figs, stats, extra


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text)


def write_participant_report(output_dir: Path, subject: str, images: list[ImageReport], version: str) -> Path:
    """Write ``output_dir/sub-<subject>.html`` and its figures; return the HTML's path."""
    output_dir = Path(output_dir)
    subject = subject[4:] if subject.startswith("sub-") else subject
    html_path = output_dir / f"sub-{subject}.html"
    fig_dir = output_dir / f"sub-{subject}" / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    versions = software_versions(version)

    sections, nav, summary_rows = [], [], []
    methods: dict[str, list[ImageReport]] = {}
    used: set[str] = set()
    for image in images:
        figs, stats, extra = _render_image(image, fig_dir, output_dir, used)
        warnings = [*image.warnings, *extra]
        sections.append(_image_section(image, figs, stats, output_dir, warnings))
        a = _anchor(image.name)
        nav.append(f'<a href="#{a}">{_esc(image.name)}</a>')
        total = sum(float(t) for t in image.timings.values() if math.isfinite(float(t)))
        summary_rows.append(
            (
                f'<a href="#{a}">{_esc(image.name)}</a>',
                _esc(image.task),
                _esc(image.model.get("Name", "")),
                _esc(f"{stats['lesion_ml']:.2f} mL" if "lesion_ml" in stats else "—"),
                _esc(_duration(total) if image.timings else "—"),
                f'<a href="#{a}-warnings">{len(warnings)}</a>' if warnings else "0",
            )
        )
        methods.setdefault(methods_paragraph(image, version, versions), []).append(image)
    nav += ['<a href="#methods">Methods</a>', '<a href="#about">About</a>']

    if images:
        summary = "<h2>Summary</h2>" + _table(
            summary_rows, header=("image", "task", "model", "lesion", "time", "warnings"), raw=True
        )
    else:
        summary = '<div class="warn">No images were processed for this participant.</div>'
    paragraphs = []
    for text, group in methods.items():
        if len(group) > 1:
            text = methods_paragraph(group[0], version, versions, plural=True)
        lead = f'<p class="note">{_esc(", ".join(i.name for i in group))}:</p>' if len(methods) > 1 else ""
        paragraphs.append(f'{lead}<p class="methods">{_esc(text)}</p>')
    methods_html = "".join(paragraphs) or '<p class="note">Nothing to describe.</p>'
    about_rows = [(k, v or "not installed") for k, v in versions.items()]
    generated = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    about = (
        _table(about_rows, header=("software", "version"))
        + f'<p class="note">Report generated {_esc(generated)} by bids_usb {_esc(version)}.</p>'
    )
    page = PAGE.substitute(
        version=_esc(version),
        subject=_esc(subject),
        nav=" ".join(nav),
        summary=summary,
        images="\n".join(sections),
        methods=methods_html,
        references="".join(f"<li>{_esc(r)}</li>" for r in REFERENCES.values()),
        about=about,
    )
    _write_atomic(html_path, page)
    return html_path
