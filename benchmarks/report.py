"""Write docs/benchmarks.md from the JSON files under benchmarks/results/ (numbers are never typed in).

python benchmarks/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usb_model.atomic import write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def quality_section(q) -> list[str]:
    if not q:
        return ["Not measured yet: `python benchmarks/quality.py --model resources/models/demo`.", ""]
    lines = [
        f"Model `{q['model']}`, grid {q['grid']} at {q['voxel_size'][0]:g} mm, {q['n_cases']} held-out cases "
        f"(test seed {q['test_seed']}), {q['seconds']:.0f} s in all.",
        "",
        "| method | L1 brain | PSNR brain (dB) | SSIM brain | L1 lesion | PSNR lesion (dB) | SSIM lesion |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, v in q["summary"].items():
        lines.append(
            f"| {m} | {v['l1_brain']:.4f} | {v['psnr_brain']:.2f} | {v['ssim_brain']:.3f} | "
            f"{v['l1_lesion']:.4f} | {v['psnr_lesion']:.2f} | {v['ssim_lesion']:.3f} |"
        )
    lines += [
        "",
        "PSNR inside the lesion by lesion appearance (dark: as in training; bright: never seen in training):",
        "",
        "| method | dark | bright |",
        "| --- | --- | --- |",
    ]
    for m in q["summary"]:
        lines.append(
            f"| {m} | {q['psnr_lesion_by_kind']['dark'][m]:.2f} | {q['psnr_lesion_by_kind']['bright'][m]:.2f} |"
        )
    e = q["embed"]
    lines += [
        "",
        f"Embedding (same masks drawn into the healthy brains): Dice of the thresholded change map "
        f"(|change| > 0.1) with the mask **{e['dice_mean']:.3f}** (target >= 0.7); mean |change| outside the mask {e['mean_abs_change_outside']:.4f}.",
        "",
        "![quality](figures/quality.png)",
        "",
    ]
    s = q["summary"]
    checks = [
        (
            "USB with ACG beats every baseline inside the lesion on PSNR",
            all(s["usb"]["psnr_lesion"] > s[m]["psnr_lesion"] for m in s if m != "usb"),
        ),
        (
            "USB with ACG beats every baseline inside the lesion on SSIM",
            all(s["usb"]["ssim_lesion"] > s[m]["ssim_lesion"] for m in s if m != "usb"),
        ),
        ("ACG beats no ACG (lesion PSNR)", s["usb"]["psnr_lesion"] > s["usb_noacg"]["psnr_lesion"]),
        ("whole-brain PSNR >= 32 dB", s["usb"]["psnr_brain"] >= 32),
        ("embedding Dice >= 0.7", e["dice_mean"] >= 0.7),
    ]
    lines += ["Targets (issue 6), as measured:", ""]
    lines += [f"- {'met' if ok else '**missed**'}: {what}" for what, ok in checks]
    lines.append("")
    return lines


CLASS_NAMES = {
    "wmh": "white-matter spots",
    "lacune": "lacunes",
    "infarct": "cortical-subcortical infarcts",
    "territorial": "territorial infarcts (>= 50 ml)",
}


def sweep_lines(h) -> list[str]:
    """The mask mode against t_start, stride and samples on the 1 mm lesioned scans, with the
    default run (``usb_mask``) on the same scans beside it. The stride and the number of denoiser
    calls come from the app's sidecars where the run recorded them (runs before 2026-12-03 asked
    for N steps and, through a floored stride, could run up to 1.5 N)."""
    params = h.get("parameters", {})
    iso = {r["sub"] for r in h["sweep_cases"]}
    runs = []  # (label, t_start, stride, samples, rows, usb seconds)
    for name, v in h["sweep"].items():
        p = params.get(f"sweep_{name}", {})
        key = (v["t_start"], v["steps"], v.get("samples", 1))
        rows = [r for r in h["sweep_cases"] if (r["t_start"], r["steps"], r.get("samples", 1)) == key]
        runs.append((name, v["t_start"], p.get("Stride"), v.get("samples", 1), rows, v["usb_node_seconds_per_scan"]))
    if "usb_mask" in params:
        p = params["usb_mask"]
        rows = [r for r in h["cases"] if r["method"] == "usb_mask" and r["sub"] in iso]
        usb = h.get("mean_node_seconds_per_scan", {}).get("usb_mask", {}).get("usb", float("nan"))
        runs.append(("usb_mask (the default run)", p["TStart"], p["Stride"], p.get("NSamples", 1), rows, usb))

    def calls(t_start, stride):
        return len(range(t_start, -1, -stride)) if stride else "?"

    lines = [
        "",
        "Mask mode against the number of denoiser steps (1 mm lesioned scans). The default (t_start 100 at the bundled "
        "model's stride 3: 34 steps) was chosen from this sweep on 2026-12-01. Samples: the healed scan is the mean of "
        "that many samples (`--n-samples`); every other number on this page is a single sample:",
        "",
        "| run | t_start | stride | denoiser steps | samples | PSNR (dB) | SSIM | USB node per scan (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, t_start, stride, samples, rows, usb in runs:
        psnr = sum(r["psnr"] for r in rows) / len(rows)
        ssim = sum(r["ssim"] for r in rows) / len(rows)
        lines.append(
            f"| {label} | {t_start} | {stride or '?'} | {calls(t_start, stride)} | {samples} | {psnr:.2f} | "
            f"{ssim:.3f} | {usb:.1f} |"
        )
    classes = [c for c in CLASS_NAMES if any(r["class"] == c for r in h["sweep_cases"])]
    lines += [
        "",
        "Lesion PSNR (dB) of the same runs by lesion class (t_start against lesion size):",
        "",
        "| run | " + " | ".join(CLASS_NAMES[c] for c in classes) + " |",
        "| --- |" + " --- |" * len(classes),
    ]
    for label, _, _, _, rows, _ in runs:
        cells = []
        for c in classes:
            sel = [r["psnr"] for r in rows if r["class"] == c]
            cells.append(f"{sum(sel) / len(sel):.2f}" if sel else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def healing_section(h) -> list[str]:
    if not h:
        return ["Not measured yet: `python benchmarks/healing.py`.", ""]
    lines = [f"`{h['command']}` ({h['date']}, model: {h['model']}, seed {h['seed']}): {h['n_scans']} scans.", ""]
    if h.get("note"):
        lines += [h["note"], ""]
    lines += [
        "Inside the lesion (BraTS 2023 inpainting metrics, `inpainting` 0.0.12) and tissue segmentation (Atropos, 3 classes) "
        "inside the lesion grown by 3 mm; volume errors are against the truth's segmentation, in the box around the lesion.",
        "",
        "| class | method | PSNR (dB) | SSIM | MSE | Dice CSF | Dice GM | Dice WM | GM vol. err. (ml) | WM vol. err. (ml) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for klass in ("all", *CLASS_NAMES):
        for m, v in h["summary"].get(klass, {}).items():
            lines.append(
                f"| {CLASS_NAMES.get(klass, 'all lesions')} | {m} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['mse']:.4f} | "
                f"{v['dice_csf']:.3f} | {v['dice_gm']:.3f} | {v['dice_wm']:.3f} | {v['gm_volume_error_ml']:+.2f} | {v['wm_volume_error_ml']:+.2f} |"
            )
    lines += [
        "",
        "Lesion PSNR by grid:",
        "",
        "| method | " + " | ".join(g for g in h["summary"] if g.startswith("grid_")) + " |",
        "| --- |" + " --- |" * sum(1 for g in h["summary"] if g.startswith("grid_")),
    ]
    grids = [g for g in h["summary"] if g.startswith("grid_")]
    for m in h["summary"]["all"]:
        lines.append(
            f"| {m} | " + " | ".join(f"{h['summary'][g][m]['psnr']:.2f}" for g in grids if m in h["summary"][g]) + " |"
        )
    if h.get("parameters"):
        lines += ["", "What each run used, read from the app's own sidecars (`USB` in the healed scan's JSON):", ""]
        keys = ("Mode", "TStart", "Stride", "Fill", "FillResidual", "BandMM", "ACG", "Alpha0")
        for run, p in h["parameters"].items():
            lines.append(f"- {run}: " + ", ".join(f"{k} {p[k]}" for k in keys if k in p))
    lines += [
        "",
        "Without a mask (`--heal-mode detect`): healthy controls and detection on the 1 mm lesioned scans.",
        "",
        "| scan | brain voxels unchanged | detected (ml) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c['sub']} | {c['unchanged_fraction']:.4%} | {c['detected_ml']:.2f} |" for c in h["controls"]]
    lines += ["", "| scan | class | lesion (ml) | detected (ml) | Dice |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {d['sub']} | {d['class']} | {d['lesion_ml']:.2f} | {d['detected_ml']:.2f} | {d['dice']:.3f} |"
        for d in h["detection"]
    ]
    if h.get("sweep"):
        lines += sweep_lines(h)
    lines += [
        "",
        "Wall time of each participant-level run over all its scans (seconds; the first run includes the preprocessing "
        "that the others reuse from the work directory):",
        "",
    ]
    lines += [f"- {k}: {v:.0f} s" for k, v in h["wall_seconds_per_run"].items()]
    lines += [
        "",
        "Mean seconds per scan of the USB node and of the native composite, where the run measured them (one CPU thread):",
        "",
    ]
    lines += [
        f"- {k}: " + ", ".join(f"{node} {sec:.1f} s" for node, sec in v.items())
        for k, v in h.get("mean_node_seconds_per_scan", {}).items()
    ]
    lines += ["", "![healing](figures/healing.png)", ""]
    s = h["summary"]
    mask, fill, acg = "usb_mask", "wm_fill", "usb_acg"
    classes = [c for c in CLASS_NAMES if c in s]
    checks = [
        (
            "USB with the mask beats the white-matter fill on lesion PSNR, all lesions",
            s["all"][mask]["psnr"] > s["all"][fill]["psnr"],
        ),
        ("... and on lesion SSIM, all lesions", s["all"][mask]["ssim"] > s["all"][fill]["ssim"]),
    ]
    for c in classes:
        if c == "wmh":
            checks.append((f"{CLASS_NAMES[c]}: within 1 dB of the fill", s[c][mask]["psnr"] >= s[c][fill]["psnr"] - 1))
        else:
            checks.append(
                (
                    f"{CLASS_NAMES[c]}: beats the fill on PSNR and SSIM",
                    s[c][mask]["psnr"] > s[c][fill]["psnr"] and s[c][mask]["ssim"] > s[c][fill]["ssim"],
                )
            )
    for c in ("infarct", "territorial"):
        if c in s:
            checks.append(
                (
                    f"{CLASS_NAMES[c]}: beats the paper's mask-free healing by >= 3 dB",
                    s[c][mask]["psnr"] >= s[c][acg]["psnr"] + 3,
                )
            )
    tissue = lambda m: (s["all"][m]["dice_gm"] + s["all"][m]["dice_wm"] + s["all"][m]["dice_csf"]) / 3  # noqa: E731
    checks.append(("tissue Dice near the lesion: USB >= fill > input", tissue(mask) >= tissue(fill) > tissue("none")))
    checks += [
        (
            f"healthy control {c['sub']}: >= 99% of brain voxels bit-identical and no detection over 1 ml",
            c["unchanged_fraction"] >= 0.99 and c["detected_ml"] <= 1,
        )
        for c in h["controls"]
    ]
    checks.append(("detection Dice >= 0.5 on lesions of 5 ml or more", h["detection_dice_5ml_plus"] >= 0.5))
    lines += [
        f"Targets (issue 10), as measured (mean tissue Dice: USB {tissue(mask):.3f}, fill {tissue(fill):.3f}, "
        f"input {tissue('none'):.3f}; detection Dice on >= 5 ml lesions {h['detection_dice_5ml_plus']:.3f}):",
        "",
    ]
    lines += [f"- {'met' if ok else '**missed**'}: {what}" for what, ok in checks]
    lines.append("")
    return lines


def autoencoder_section(a) -> list[str]:
    if not a:
        return ["Not measured yet: `python benchmarks/autoencoder.py --model resources/models/demo`.", ""]
    env, h, les = a["environment"], a["summary"]["healthy"], a["summary"]["lesioned"]
    return [
        f"`python benchmarks/autoencoder.py --model {env['model']} --n {env['n']}` ({env['date']}): encode, decode, no diffusion; "
        f"held-out synthetic brains (seed {env['test_seed']}), inside the brain.",
        "",
        "| input | PSNR (dB) | SSIM | mean abs. error |",
        "| --- | --- | --- | --- |",
        f"| healthy | {h['psnr_brain']:.2f} | {h['ssim_brain']:.3f} | {h['l1_brain']:.4f} |",
        f"| lesioned | {les['psnr_brain']:.2f} | {les['ssim_brain']:.3f} | {les['l1_brain']:.4f} |",
        "",
        f"Target >= 30 dB: {'met' if h['psnr_brain'] >= 30 else '**missed**'}.",
        "",
    ]


def autoencoder_shapes_section(a) -> list[str]:
    if not a:
        return []
    lines = [
        "Autoencoder shapes for the same training budget (issue 10: what each choice buys per CPU-hour). "
        f"{a['note'][0].upper() + a['note'][1:]}. Command: `{a['command']}`.",
        "",
        "| shape | config | steps | CPU hours | PSNR brain (dB) | SSIM brain | mean abs. error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in a["results"]:
        lines.append(
            f"| {r['shape']} | `{r['config']}` | {r['steps']} | {r['cpu_hours']:.2f} | {r['psnr_brain']:.2f} | {r['ssim_brain']:.3f} | "
            f"{r['l1_brain']:.4f} |"
        )
    return lines + [""]


def calibration_section(c) -> list[str]:
    if not c:
        return []
    return [
        "Detection threshold calibrated on healthy brains of the training distribution "
        f"(`python benchmarks/detection_calibration.py --model {c['model']} --n {c['n']}`, {c['date']}): the free healing pass "
        f"from t = {c['detect_t_start']} departs from healthy brains by up to {c['healthy_max_p99.99']:.3f} (highest 99.99th "
        f"percentile of the anomaly map), so the bundled model detects above **{c['suggested_threshold']}**; "
        f"{c['lesions_above_suggestion']} of {c['n']} lesions of the same brains stand out above it (median anomaly inside "
        "the lesion: " + ", ".join(f"{r['lesion_median']:.3f}" for r in c["cases"]) + ").",
        "",
    ]


def registration_seed_section(r) -> list[str]:
    """How far one scan's fill moves with the affine registration's seed alone."""
    if not r:
        return []
    lines = [
        "### One scan, other registration seeds",
        "",
        f"`{r['command']}` ({r['date']}): the app's affine registration of some of the scans above re-run with other seeds "
        "(one ITK thread, as the app runs it), and the template graft made with each affine; lesion PSNR (dB). Small "
        "lesions move by several dB on the seed alone, so the per-class means of two or three scans above carry that "
        "much noise.",
        "",
        "| scan | lesion (ml) | graft PSNR by seed | range (dB) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['sub']} | {c['lesion_ml']:.2f} | "
        + ", ".join(f"{p:.2f}" for p in c["graft_psnr_by_seed"])
        + f" | {c['range_db']:.2f} |"
        for c in r["cases"]
    ]
    return lines + [""]


def variants_section(h, title: str, what: str) -> list[str]:
    """Variants of the mask mode run side by side (benchmarks/healing.py --methods ... --results ...):
    lesion PSNR / SSIM per class, and tissue Dice near the lesion over all lesions."""
    if not h:
        return []
    out = [f"### {title}", "", f"`{h['command']}` ({h['date']}, {h['n_scans']} scans, single sample): {what}", ""]
    summary = h["summary"]
    classes = [k for k in ("all", "wmh", "lacune", "infarct", "territorial") if k in summary and summary[k]]
    methods = list(summary["all"])
    out += [
        "| method | " + " | ".join(f"{k}: PSNR / SSIM" for k in classes) + " | mean tissue Dice (all) |",
        "| --- |" + " --- |" * (len(classes) + 1),
    ]
    for m in methods:
        cells = []
        for k in classes:
            v = summary[k].get(m, {})
            psnr, ssim = v.get("psnr"), v.get("ssim")
            cells.append("n/a" if psnr is None or psnr != psnr else f"{psnr:.2f} / {ssim:.3f}")
        a = summary["all"][m]
        dice = (a["dice_csf"] + a["dice_gm"] + a["dice_wm"]) / 3
        out.append(f"| {m} | " + " | ".join(cells) + f" | {dice:.3f} |")
    out.append("")
    return out


def residual_variants_section(runs) -> list[str]:
    """benchmarks/residual_variants.py: how the model's change to the fill reaches the lesion, and
    the blend band, on one or more healing.py runs (the masks as drawn, and under-segmented)."""
    runs = [(label, r) for label, r in runs if r]
    if not runs:
        return []
    out = [
        "### How much of the model's change, and which band",
        "",
        "The default's output taken apart (`benchmarks/residual_variants.py`): the native fill is rebuilt as the app builds "
        "it, the model's change is the output minus the fill, and the variants recombine them. `fill`: the fill alone (the "
        "model's change dropped); `full`: fill + change, as the app wrote it up to this run; `half`: half the change; "
        "`smooth`: the change smoothed inside the lesion (sigma 4 mm); `range`: fill + change bounded by the fill's own range "
        "over each voxel's 3^3 neighbourhood (what the app writes since); each of these with no blend band. `app`: the app's "
        "output as written, with the band it then had (1 mm full, fading to none at 4 mm); `band_0_2`: the same change "
        "with a band fading from 0 to 2 mm (the default since). Lesion PSNR / SSIM (BraTS `inpainting`) on the whole true lesion; tissue Dice "
        "(Atropos, mean of CSF/GM/WM) inside the lesion grown by 3 mm, which is where the band lies.",
        "",
    ]
    for label, r in runs:
        summary = r["summary"]
        classes = [k for k in ("all", "wmh", "lacune", "infarct", "territorial") if k in summary]
        out += [
            f"{label}: `{r['command']}` ({r['date']})",
            "",
            "| variant | " + " | ".join(f"{k}: PSNR / SSIM / Dice" for k in classes) + " |",
            "| --- |" + " --- |" * len(classes),
        ]
        for v in summary["all"]:
            cells = [
                f"{summary[k][v]['psnr']:.2f} / {summary[k][v]['ssim']:.3f} / {summary[k][v]['tissue_dice']:.3f}"
                for k in classes
            ]
            out.append(f"| {v} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def generation_section(g) -> list[str]:
    """benchmarks/generation.py: generated pairs against held-out synthetic brains."""
    if not g:
        return ["Not measured yet: `python benchmarks/generation.py --model resources/models/demo`.", ""]
    env, masks = g["environment"], g["masks"]
    lines = [
        f"`{env['command']}` ({env['date']}, {env['device']}, {env['n']} pairs from noise at {env['steps']} steps, "
        f"{env['seconds_per_sample']:.1f} s per pair): unbiased MMD^2 (RBF) and KID against held-out synthetic brains "
        f"(seed {env['test_seed']}) in two feature spaces: `intensity` (the 32-bin histogram inside the brain) and `shape` "
        "(the volume pooled to 8^3: is tissue where a brain has it). `reference` is a second held-out set (the floor), "
        "`blobs` Gaussian-smoothed noise (what a useless model reaches).",
        "",
        "| samples | MMD intensity | KID intensity | MMD shape | KID shape |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("generated", "reference", "blobs"):
        v = g[name]
        lines.append(
            f"| {name} | {v['intensity']['mmd_rbf']:.3f} | {v['intensity']['kid_mean']:.3f} | "
            f"{v['shape']['mmd_rbf']:.3f} | {v['shape']['kid_mean']:.3f} |"
        )
    lines += [
        "",
        f"Generated lesion masks: median {masks['median_volume_ml']:.0f} ml in a median of {masks['median_components']:.0f} "
        f"pieces ({masks['empty']} empty), {100 * masks['mean_in_parenchyma']:.0f} % of their voxels in the template's "
        f"parenchyma (the template brain is {masks['brain_volume_ml']:.0f} ml).",
        "",
        "![generation](figures/generation.png)",
        "",
    ]
    return lines


def participant_passes_section(runs) -> list[str]:
    """Issue 26: one participant's USB node by stage, before and after the autoencoder's passes were
    limited to the edit region, with the passes and the peaks, for each (name, before, after)."""
    lines = [
        "## One participant, the autoencoder's passes before and after (issue 26)",
        "",
        "The USB node's stages (seconds, peak resident MB within the stage), its autoencoder passes, the whole "
        "workflow and its peak. `before`: `--ae-passes full` (the default then) and, for converted checkpoints, 101 "
        "mask-mode steps; `after`: `--ae-passes edit` (the default since), the statistics-only whole-grid decode in "
        "bf16 on this CPU (avx512_bf16), 34 steps. Details and the quality checks: docs/ae-passes.md.",
        "",
    ]
    for title, before, after in runs:
        if not before or not after:
            continue
        env = after["environment"]
        lines += [
            f"**{title}**: `{after.get('command', 'python benchmarks/participant.py')}`; input {env['input_shape']} at "
            f"{env['input_voxel_mm']} mm, model grid {env['model_grid']}, {env['threads']} threads, "
            f"{before['environment']['date']} / {env['date']}.",
            "",
            "| stage | before: s | before: peak MB | after: s | after: peak MB |",
            "| --- | --- | --- | --- | --- |",
        ]
        b = {r["stage"]: r for r in before.get("usb_node", {}).get("stages", [])}  # older runs: none
        a = {r["stage"]: r for r in after.get("usb_node", {}).get("stages", [])}
        for stage in dict.fromkeys([*b, *a]):
            cells = []
            for run in (b, a):
                r = run.get(stage)
                cells += [f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"] if r else ["-", "-"]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        for label, key in (("USB node", "usb"), ("preprocessing", None), ("whole workflow", "workflow")):
            if key == "usb":
                values = [run["stages_seconds"]["usb"] for run in (before, after)]
            elif key is None:
                values = [run["preprocessing_seconds"] for run in (before, after)]
            else:
                values = [run["workflow_seconds"] for run in (before, after)]
            lines.append(f"| **{label}** | **{values[0]:.1f}** | | **{values[1]:.1f}** | |")
        lines.append(f"| peak memory (MB) | | {before['peak_memory_mb']:.0f} | | {after['peak_memory_mb']:.0f} |")
        lines += ["", "Passes (kind, region, shape, batch):", ""]
        for label, run in (("before", before), ("after", after)):
            if "usb_node" not in run:
                lines.append(f"- {label}: not recorded by that version of the benchmark")
                continue
            passes = ", ".join(
                f"{q['kind']} {q['region']} {'x'.join(map(str, q['shape']))} x{q['batch']}"
                for q in run["usb_node"]["passes"]
            )
            lines.append(f"- {label}: {passes}")
        lines.append("")
    return lines


def n4_section(n4, before, after) -> list[str]:
    """Issue 26's demo target: N4 fitted on the head instead of the whole grid, its cost and
    accuracy (benchmarks/n4.py), and the demo participant before and after (participant.py)."""
    if not n4:
        return []
    lines = [
        "## N4 fitted on the head (issue 26)",
        "",
        f"`{n4['command']}`, {n4['threads']} threads, {n4['date']}. The app's N4 settings "
        f"({n4['n4_settings']}) fitted on every voxel of the grid (before) or on the head "
        "(`bids_usb.preprocessing.head_mask`, ANTs' `get_mask` with scipy filling the holes; now). Field error: "
        "the scan is multiplied by a known smooth field F, and the ratio of N4's fields with and without F is "
        "compared with F over the tissue, |ratio / F - 1| (N4's free scale removed). Seconds include the mask.",
        "",
        "| scan | background | fit on | seconds | field error: mean | field error: p95 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in n4["rows"]:
        lines.append(
            f"| {r['scan']} | {r['background_fraction']:.0%} | {r['fit_on']} | {r['seconds']:.1f} | "
            f"{r['field_error_mean']:.4f} | {r['field_error_p95']:.4f} |"
        )
    lines.append("")
    if before and after:
        lines += [
            f"The demo model's participant, `{before['command']}` ({before['environment']['date']}) against "
            f"`{after['command']}` ({after['environment']['date']}), 2 threads, the trainer paused:",
            "",
            "| stage | before: s | after: s |",
            "| --- | --- | --- |",
        ]
        for stage in ("bias_correct", "skull_strip", "register", "usb", "to_native"):
            lines.append(f"| {stage} | {before['stages_seconds'][stage]:.1f} | {after['stages_seconds'][stage]:.1f} |")
        lines += [
            f"| **whole workflow** (target <= 60 s) | **{before['workflow_seconds']:.1f}** | "
            f"**{after['workflow_seconds']:.1f}** |",
            "",
        ]
    return lines


def main() -> None:
    sampling = load("sampling-cpu.json")
    synth = load("synth.json")
    participant = load("participant-cpu.json")
    training = load("training-cpu.json")
    quality = load("quality.json")
    out = [
        "# Benchmarks",
        "",
        "Every number below is read from `benchmarks/results/*.json`, written by the scripts named; "
        "this page is regenerated with `python benchmarks/report.py`. The machine is the project's "
        "2-core x86-64 CPU box (no GPU was lent to the sessions that measured these), often shared "
        "with other jobs: treat the timings as upper bounds.",
        "",
        "**The bundled model changed on 2026-12-06**: the CPU campaign's model (`benchmarks/campaign/`) replaced the first "
        'demo model (1.4 h of training). Every result on this page that says "bundled demo" or `resources/models/demo` '
        "and is dated before then was measured on the first one; the bundled model's own numbers are in its card "
        "([resources/models/demo/README.md](../resources/models/demo/README.md)), which reads only results that name its "
        "weights (`model_sha256`).",
        "",
    ]
    out += ["## Healing native scans end to end (what users run)", ""]
    out += healing_section(load("healing.json"))
    out += registration_seed_section(load("registration-seed.json"))
    out += variants_section(
        load("healing-fill.json"),
        "Which fill USB starts from",
        "`usb_mask` starts from the model's default fill, `usb_mask_auto` from `--fill auto` (the white-matter fill for "
        "lesion components whose rim is white matter, the template graft elsewhere). BraTS `inpainting` metrics inside the "
        "lesion; tissue Dice (Atropos) inside the lesion grown by 3 mm, mean of CSF, GM and WM.",
    )
    out += variants_section(
        load("healing-residual.json"),
        "The decoded lesion or the fill plus the model's change (`--fill-residual`)",
        "`usb_mask` puts the decoded healed brain (model grid, resampled) into the lesion; `usb_mask_residual` the "
        "template graft made on the scan's own grid plus the model's change to the fill, decode(healed) - decode(filled); "
        "`usb_mask_auto_residual` the same from `--fill auto`, the default since this run (the tables above ran the decoded lesion). "
        "`wm_fill` and `graft` are the classical fills alone.",
    )
    out += residual_variants_section(
        [
            ("Masks as drawn (the whole lesion)", load("residual-variants.json")),
            (
                "Under-segmented masks (the app given the lesion less its outer 1 mm)",
                load("residual-variants-eroded.json"),
            ),
        ]
    )
    out += variants_section(
        load("healing-eroded.json"),
        "Under-segmented masks, end to end",
        "each scan's mask given to the app (and to the classical fills) without the lesion's outer 1 mm, as a manual mask "
        "that leaves out the partial-volume rim; scores on the whole true lesion.",
    )
    out += calibration_section(load("detection-calibration.json"))
    out += ["## Autoencoder reconstruction", ""]
    out += autoencoder_section(load("autoencoder.json"))
    out += autoencoder_shapes_section(load("autoencoder-shapes.json"))
    out += ["## Generation (pairs from noise)", ""]
    out += generation_section(load("generation-cuda.json") or load("generation-cpu.json"))
    out += [
        "## Healing on the model grid (the model's comfort zone)",
        "",
        "Lesions drawn on the model grid and healed there; kept for comparison with earlier models: it flatters the model "
        "(no resampling, no native resolution). The paper's mask-free ACG healing (`usb`) was the only mode when it was measured.",
        "",
        "`python benchmarks/quality.py --model resources/models/demo`",
        "",
    ]
    out += quality_section(quality)
    out += [
        "## Sampling speed",
        "",
        "`python benchmarks/sampling.py` (random weights: speed does not depend on them)",
        "",
    ]
    if sampling:
        env = sampling["environment"]
        out += [
            f"Device: {env['device']}, {env['threads']} threads, torch {env['torch']}, {env['date']}.",
            "",
            "| preset | what | seconds | peak memory (MB) |",
            "| --- | --- | --- | --- |",
        ]
        out += [
            f"| {r['preset']} | {r['what']} | {r['seconds']:.3f} | {r['peak_memory_mb']:.0f} |"
            for r in sampling["results"]
        ]
        out.append("")
    out += ["## Per-participant wall time by stage", "", "`python benchmarks/participant.py --threads 2`", ""]
    if participant:
        env = participant["environment"]
        out += [
            f"Input {env['input_shape']} at {env['input_voxel_mm']} mm; model grid {env['model_grid']}; "
            f"{env['device']}, {env['threads']} threads, {env['date']}.",
            "",
            "| stage | seconds |",
            "| --- | --- |",
        ]
        out += [f"| {k} | {v:.2f} |" for k, v in participant["stages_seconds"].items()]
        out += [
            f"| **preprocessing** (target <= 60 s) | **{participant['preprocessing_seconds']:.1f}** |",
            f"| **whole workflow** (target <= 180 s) | **{participant['workflow_seconds']:.1f}** |",
            f"| peak memory (MB) | {participant['peak_memory_mb']:.0f} |",
            "",
        ]
    out += participant_passes_section(
        [
            (
                "Paper-size checkpoint (random weights, converted), `--mem 6`",
                load("participant-cpu-paper-mem6.json"),
                load("participant-cpu-paper-mem6-edit.json"),
            ),
            ("Bundled demo model", participant, load("participant-cpu-demo-edit.json")),
        ]
    )
    out += n4_section(load("n4.json"), load("participant-cpu-demo-edit.json"), load("participant-cpu-demo-n4.json"))
    out += ["## Training-data synthesis", "", "`python benchmarks/synth.py`", ""]
    if synth:
        out += [
            f"{synth['grid']} at {synth['voxel_size_mm']} mm, {synth['threads']} thread: "
            f"**{synth['seconds_per_triplet_mean']:.3f} s** per triplet (mean of {synth['n_triplets']}; target <= 2 s).",
            "",
        ]
    out += ["## Training speed (`paper` preset)", "", "`python benchmarks/training.py --preset paper`", ""]
    if training:
        out += ["| stage | status | seconds per step | peak memory (MB) |", "| --- | --- | --- | --- |"]
        for r in training["results"]:
            out.append(
                f"| {r['stage']} | {r['status']} | {r.get('seconds_per_step', float('nan')):.1f} | {r.get('peak_memory_mb', float('nan')):.0f} |"
            )
        out.append("")
    out += [
        "## Not measured here",
        "",
        "- GPU numbers (the `paper` heal in <= 3 s on an H100-class GPU, training iterations per second on a GPU): "
        "no GPU was lent to the sessions so far. The scripts above measure them on the device they find.",
        "- The authors' denoiser block at the paper's size (what `usb-import-upstream` checkpoints run): "
        "`python benchmarks/sampling.py --presets paper --res-block scale_shift --tasks heal` on a GPU "
        "(results/sampling-cuda-scale_shift.json); not run yet.",
        "",
    ]
    write_text(ROOT / "docs" / "benchmarks.md", "\n".join(out))
    print(ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
