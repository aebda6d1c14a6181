"""Copy a trained checkpoint into the package as the bundled demo model, with its model card.

    python scripts/bundle_demo_model.py TRAINING_DIR [--name demo]
    python scripts/bundle_demo_model.py --card-only [--name demo]    # the card alone, from the bundled files

TRAINING_DIR is a ``usb-train`` (or group ``train``) directory: its ``checkpoint/`` is copied
to ``resources/models/<name>/`` with ``log.tsv`` as ``training_log.tsv``, and the
model card (README.md) is written from the checkpoint's config and meta, the training log and,
when present, ``benchmarks/results/{quality,healing,autoencoder,generation-*}.json``: every number in the card is
read from a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usb_model.atomic import write_text  # noqa: E402
from usb_model.checkpoint import atomic_directory, checkpoint_sha256  # noqa: E402
from usb_model.config import USBConfig  # noqa: E402


def stage_summary(log: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with open(log) as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[row["stage"]] = {
                "steps": int(row["step"]),
                "seconds": float(row["seconds"]),
                "loss": float(row["loss"]),
            }
    return out


def card(name: str, cfg: USBConfig, meta: dict, stages: dict, sha: str, size_mb: float, results: dict) -> str:
    """The model card. Every number is read from a file; ``results`` holds only benchmark results
    measured on these weights (``measured_results``), so a card never shows another model's numbers."""
    g, t = cfg.grid, cfg.training
    notes = meta.get("notes", {})
    lines = [
        f"# USB model card: `{name}`",
        "",
        "A small demonstration model of USB (Wang & Liu, *USB: Unified Synthetic Brain Framework for",
        "Bidirectional Pathology-Healthy Generation and Editing*), trained by this project on a CPU so",
        "that the BIDS App runs out of the box. **It is not the paper's model, it was not trained on",
        "real patients, and it is not for clinical or research conclusions.** Use it to try the",
        "software; train your own (`bids_usb ... group --group-task train`) for real work.",
        "",
        "## What it is",
        f"- Contrast: {g.contrast}; grid {g.shape[0]}x{g.shape[1]}x{g.shape[2]} at {g.voxel_size[0]:g} mm in MNI152NLin2009aSym;",
        f"  latent {'x'.join(str(s) for s in cfg.latent_shape)}.",
        f"- Autoencoder channels {list(cfg.autoencoder.channels)}; denoisers channels {list(cfg.denoiser.channels)},",
        f"  attention {list(cfg.denoiser.attention_levels)}; T = {cfg.schedule.num_train_timesteps}, linear betas",
        f"  {cfg.schedule.beta_start:g}..{cfg.schedule.beta_end:g}; the denoisers predict {cfg.schedule.prediction_type}.",
        f"- Weights: `model.safetensors`, {size_mb:.1f} MB, sha256 `{sha}`; latent scale {meta.get('latent_scale', float('nan')):.4f};",
        f"  empty-lesion condition: {meta.get('empty_condition')}.",
        "- Every benchmark below was measured on these weights"
        + (" (or, where it says so, on the weights they were fine-tuned from)" if notes.get("initialised_from") else "")
        + ": its results file names their sha256 (a command's",
        "  `--model` may be a copy of this directory).",
        "",
        "## Training data",
        "Healthy brains synthesised on the fly from the MNI ICBM 2009a template shipped in nilearn's",
        "wheel (random affine and elastic deformation, per-tissue contrast, gamma, bias, noise, blur),",
        "with pseudo-lesions (Perlin shapes advected by divergence-free flows, WMH-like spots to",
        f"stroke-like territories) drawn in as T1w darkening (usb_model.synth; seed {meta.get('training_data', {}).get('seed', 'n/a')}).",
        f"{t.healthy_fraction:.0%} of the denoisers' samples are healthy (the empty-lesion condition). No real scan of a",
        "patient or of any person other than the template was used.",
        "",
        "## Training",
        "| stage | steps | batch | seconds | last logged loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    adopted = notes.get("autoencoder_from") or {}
    for stage in ("autoencoder", "lesion", "brain"):
        s = stages.get(stage)
        if s:
            batch = adopted.get("batch_size", t.batch_size) if stage == "autoencoder" else t.batch_size
            lines.append(f"| {stage} | {s['steps']} | {batch} | {s['seconds']:.0f} | {s['loss']:.4f} |")
    total = sum(s["seconds"] for s in stages.values())
    lines += [
        "",
        f"Hardware: 2 CPU cores (x86-64), no GPU, shared with other jobs; {total / 3600:.2f} h of training in this log",
    ]
    if "latent_cache" in notes:
        lines += [
            "(the trainer's own clock, saves excluded, pauses for other work included). Trained by the CPU campaign,",
            "in the background of several sessions and resumed from a committed state: `bash scripts/campaign.sh start`;",
            "`benchmarks/campaign/README.md` has the plan, the commands and the learning curves. Denoiser weights:",
            f"{notes.get('denoiser_weights', 'n/a')}; latents: {notes['latent_cache']}.",
        ]
    else:
        lines += [
            "(the trainer's own clock: saves excluded). Command:",
            "`usb-train DIR --preset demo --steps autoencoder=400,lesion=300,brain=N --threads 2` (resumable).",
        ]
    if notes.get("initialised_from"):
        lines.append(
            "Every network this log does not train is the checkpoint's it was fine-tuned from (`usb-train --init-checkpoint`;"
            " below): their training is in that run's log."
        )
    elif "autoencoder" not in stages:
        lines.append(
            "The autoencoder was trained in a run of its own and loaded into this one (`--init-autoencoder`): its steps"
            " are not in this log."
        )
    lines += ["The curves are in `training_log.tsv`.", ""]
    parent = notes.get("initialised_from")
    if parent:
        lines += [
            "## Fine-tuned from",
            f"`{parent.get('checkpoint')}` (sha256 `{parent.get('model_sha256')}`, trained steps {parent.get('trained_steps')}):",
            f"this model trained {', '.join(f'{k} {v}' for k, v in notes.get('trained_steps', {}).items() if v)} steps more on",
            "it (the log above), every other network as it was"
            + (
                "; the lesion stage on lesioned items only (`lesion_healthy_items` false)."
                if notes.get("lesion_healthy_items") is False
                else "."
            ),
            "",
        ]
    donor = notes.get("autoencoder_from")
    if donor:
        lines += [
            "## Autoencoder adopted from a run of its own",
            f"The autoencoder is that of `{donor.get('checkpoint')}` (sha256 `{donor.get('model_sha256')}`,"
            f" {donor.get('trained_steps', {}).get('autoencoder', 'n/a')} autoencoder steps; weights: {donor.get('weights')}),",
            "put with `python -m usb_model.train.adopt` onto the denoisers, sampling settings and template of sha256",
            f"`{donor.get('denoisers_from_sha256')}`, which it left bit for bit as they were. Every result below was",
            "measured on the combination.",
            "",
        ]
    lines += _marked(results.get("quality"), _quality_section)
    lines += _marked(results.get("autoencoder"), _autoencoder_section)
    for healing in results.get("healing", []):
        lines += _marked(healing, _healing_section)
    for residual in results.get("residual", []):
        lines += _marked(residual, _residual_section)
    lines += _generation_section(results.get("generation"))
    lines += _lesion_from_section(results.get("lesion_from"))
    for detection in results.get("detection", []):
        lines += _marked(detection, _detection_section)
    lines += _marked(results.get("controls"), _controls_section)
    lines += _verdicts(results, cfg.sampling.detect_t_start, cfg.sampling.detect_threshold)
    lines += [
        "## What it is not",
        "- Not trained on real patients, on real healthy cohorts, on FLAIR, or at the paper's 1 mm / 160^3 scale.",
        "- Not for clinical use, and not a reproduction of the paper's reported numbers.",
        f"- Trained on a CPU ({total / 3600:.1f} h in its own log"
        + (
            "; the runs it was fine-tuned from are in benchmarks/campaign/README.md"
            if notes.get("initialised_from")
            else ""
        )
        + "): its decodes are smoother than the scans,",
        "  and the paper's mask-free ACG healing (`--heal-mode acg`) leaves large lesions in place.",
        "",
    ]
    return "\n".join(lines)


def _marked(result: dict | None, section) -> list[str]:
    """A section's lines, with a line after its heading when it was measured on the parent's
    weights (``measured_results``: a lesion-only fine-tune changes nothing these tasks run)."""
    lines = section(result)
    if lines and result and result.get("_parent"):
        note = (
            f"*Measured on the weights this model was fine-tuned from (sha256 `{result['_parent'][:12]}...`): the"
            " fine-tune changed the lesion net only, which this task does not run.*"
        )
        lines = [lines[0], note, *lines[1:]]
    return lines


def _quality_section(quality: dict | None) -> list[str]:
    if not quality:
        return []
    lines = [
        "## Measured quality on the model grid (benchmarks/quality.py)",
        f"Held-out synthetic test set, {quality['n_cases']} cases (test seed {quality['test_seed']}), model grid; every",
        "method composited the same way with the true mask. PSNR in dB (data range 1).",
        "",
        "| method | PSNR brain | SSIM brain | PSNR lesion | SSIM lesion | L1 lesion |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    if not quality["summary"]:  # --embed-only
        lines = [
            "## Embedding on the model grid (benchmarks/quality.py --embed-only)",
            f"{quality['n_cases']} held-out synthetic brains (test seed {quality['test_seed']}), each with its test case's lesion"
            " mask embedded.",
        ]
    for m, v in quality["summary"].items():
        lines.append(
            f"| {m} | {v['psnr_brain']:.2f} | {v['ssim_brain']:.3f} | {v['psnr_lesion']:.2f} | {v['ssim_lesion']:.3f} | {v['l1_lesion']:.4f} |"
        )
    e = quality["embed"]
    return lines + [
        "",
        f"Embedding: Dice of the change map with the requested mask {e['dice_mean']:.3f} (target >= 0.7"
        f"{', missed' if e['dice_mean'] < 0.7 else ', met'}); mean |change| outside the mask {e['mean_abs_change_outside']:.4f}.",
        f"Command: `{quality.get('command', 'python benchmarks/quality.py')}`. See docs/benchmarks.md for what these numbers do",
        "and do not show.",
        "",
    ]


def _autoencoder_section(autoencoder: dict | None) -> list[str]:
    if not autoencoder:
        return []
    h, env = autoencoder["summary"]["healthy"], autoencoder["environment"]
    return [
        "## Autoencoder reconstruction (benchmarks/autoencoder.py)",
        f"Encode then decode, no diffusion, {env['n']} held-out synthetic brains (seed {env['test_seed']}), inside the brain:",
        f"PSNR {h['psnr_brain']:.2f} dB, SSIM {h['ssim_brain']:.3f}, mean absolute error {h['l1_brain']:.4f} (target: >= 30 dB"
        f"{', missed' if h['psnr_brain'] < 30 else ', met'}). Everything the model outputs passes through this decoder;",
        "healing keeps the scan outside the lesion and the fill's own detail inside it, generation does not.",
        "",
    ]


def _classes(summary: dict) -> list[str]:
    """The lesion classes a healing summary has scores for, in the benchmark's order."""
    order = ("subtle", "wmh", "lacune", "infarct", "territorial")
    return [k for k in order if k in summary and summary[k]]


def _healing_section(healing: dict) -> list[str]:
    hs = healing["summary"]
    classes = _classes(hs)
    used = healing.get("parameters", {}).get("usb_mask", {})
    command = healing["command"]
    anatomy = (
        "Colin 27's whole head (not the template; deepbet strips it)"
        if "colin-head" in command
        else (
            "Colin 27, skull-stripped (not the template)"
            if "--anatomy colin" in command
            else "deformed copies of the template"
        )
    )
    setting = _healing_setting(healing)
    masks = MASK_KINDS.get(setting[1] if isinstance(setting, tuple) else "exact", setting[1])
    lines = [
        f"## Healing native scans through the app: {anatomy}, {masks} (benchmarks/healing.py)",
        f"{healing['n_scans']} synthetic T1w scans with lesions drawn in, through `bids_usb ... participant`; BraTS inpainting",
        f"metrics inside the lesion, single sample (`{command}`, {healing['date']}). Lesion PSNR / SSIM per class; tissue Dice",
        "(Atropos): mean of CSF, GM and WM inside the lesion grown by 3 mm.",
        "",
        "| method | all | " + " | ".join(classes) + " | tissue Dice |",
        "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- |",
    ]
    lines += _class_rows(hs, classes)
    if used:
        lines += [
            "",
            f"`usb_mask` is the app's default with a mask (its sidecars: t_start {used.get('TStart')}, stride {used.get('Stride')},"
            f" fill {used.get('Fill')}, fill residual {used.get('FillResidual')}, band {used.get('BandMM')} mm).",
        ]
    return lines + [""]


def _residual_section(residual: dict) -> list[str]:
    """The model's own part of a heal: the app's result against the same fill without the model's change."""
    s = residual["summary"]
    classes = _classes(s)
    gain = {k: s[k]["app"]["psnr"] - s[k]["fill"]["psnr"] for k in ["all", *classes]}
    lines = [
        "## The model's own part of a heal (benchmarks/residual_variants.py)",
        "The same scans: `fill` is the fill the app makes on the scan's grid, without the model's change; `app` is what",
        f"the app wrote (the fill plus the model's change). `{residual['command']}`, {residual['date']}.",
        "",
        "| | all | " + " | ".join(classes) + " | tissue Dice |",
        "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- |",
    ]
    for m in ("fill", "app"):
        cells = [f"{s[k][m]['psnr']:.2f}" for k in ["all", *classes]]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {s['all'][m]['tissue_dice']:.3f} |")
    lines.append("| app - fill (dB) | " + " | ".join(f"{gain[k]:+.2f}" for k in ["all", *classes]) + " | |")
    met = gain["all"] >= 1.0 and all(gain[k] >= 0 for k in classes)
    return lines + [
        "",
        f"Target: the model's change adds >= 1 dB on average and loses in no class: {'met' if met else 'missed'}.",
        "",
    ]


def _generation_section(generation: dict | None) -> list[str]:
    if not generation:
        return []
    env, gen, ref, blobs, masks = (generation[k] for k in ("environment", "generated", "reference", "blobs", "masks"))
    lines = [
        "## Generation (benchmarks/generation.py)",
        f"{env['n']} pairs from noise ({env['steps']} DDIM steps, eta {env.get('ddim_eta', 0.0):g}, {env['device']}) against held-out",
        f"synthetic brains (seed {env['test_seed']}). MMD^2 in the brain-shape feature (the volume pooled to 8^3)",
        f"{gen['shape']['mmd_rbf']:.3f} (target <= 0.05), where a second held-out set gives {ref['shape']['mmd_rbf']:.3f} and smoothed",
        f"noise {blobs['shape']['mmd_rbf']:.3f}; in the intensity histogram {gen['intensity']['mmd_rbf']:.3f} (target <= 0.10; held-out",
        f"{ref['intensity']['mmd_rbf']:.3f}, noise {blobs['intensity']['mmd_rbf']:.3f}"
        + (
            f", held-out brains through this autoencoder {generation['autoencoded']['intensity']['mmd_rbf']:.3f}"
            if "autoencoded" in generation
            else ""
        )
        + ").",
        f"Generated masks: {masks.get('empty', 'n/a')} of {env['n']} empty; median {masks['median_volume_ml']:.0f} ml in"
        f" {masks['median_components']:.0f} pieces, {100 * masks['mean_in_parenchyma']:.0f} % of them in the template's parenchyma"
        " (targets: <= 5 pieces, >= 80 %).",
        f"Command: `{env.get('command', 'python benchmarks/generation.py')}`.",
        "",
    ]
    figure = Path(env.get("figure", "docs/figures/generation.png"))
    figure = figure.relative_to(ROOT) if figure.is_absolute() else figure
    return lines + [f"![generated pairs](../../../{figure.as_posix()})", ""]


def _detection_section(detection: dict | None) -> list[str]:
    if not detection:
        return []
    lines = [
        "## Detection without a mask (benchmarks/detection_calibration.py)",
        f"The free healing pass on {detection['n']} held-out synthetic brains, each healthy and with a lesion drawn in"
        f" ({detection['size']} ml); the threshold is the",
        "lowest at which no healthy brain shows a lesion of `detect_min_ml` or more, plus 10 % (the rule of the run's date:",
        "see the results file's note). Dice of what detection finds with the lesion, by its size.",
        f"`{detection['command']}`, {detection['date']}.",
        "",
        "| t_start | samples | anomaly map | threshold | Dice under 1 ml | Dice 1-5 ml | Dice >= 5 ml |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    # Runs made before the map was a setting used |healed - input| smoothed by 0.7 voxels.
    anomaly = f"{detection.get('detect_polarity', 'any')}, sigma {detection.get('detect_sigma_vox', 0.7):g}"
    for s in detection.get("settings", []):
        d = s["dice_by_size"]
        cells = [
            f"{d[k]['mean_dice']:.2f} (n={d[k]['n']})" if d[k]["mean_dice"] is not None else "none drawn"
            for k in ("under_1ml", "1_to_5ml", "5ml_plus")
        ]
        lines.append(
            f"| {s['detect_t_start']} | {s['samples']} | {anomaly} | {s['suggested_threshold']} | "
            + " | ".join(cells)
            + " |"
        )
        # The same maps scored at thresholds chosen elsewhere (--also-thresholds: real healthy heads).
        for th, d in s.get("dice_by_size_at", {}).items():
            cells = [
                f"{d[k]['mean_dice']:.2f} (n={d[k]['n']})" if d[k]["mean_dice"] is not None else "none drawn"
                for k in ("under_1ml", "1_to_5ml", "5ml_plus")
            ]
            lines.append(
                f"| {s['detect_t_start']} | {s['samples']} | {anomaly} | {th} (given) | " + " | ".join(cells) + " |"
            )
    return lines + ["", "Target: Dice >= 0.5 on lesions of 5 ml or more.", ""]


def _lesion_from_section(result: dict | None) -> list[str]:
    if not result:
        return []
    s, env = result["summary"], result["environment"]
    lo, hi = s["training_volume_ml_p5_p95"]
    return [
        "## A lesion generated for a given brain (`--lesion-from generate`; benchmarks/lesion_from_generate.py)",
        f"Input: {env['input']}, {env['n']} seeds. Proposed {s['proposed']} of {env['n']}; median"
        f" {s['median_volume_ml'] or 0:.1f} ml; {100 * (s['mean_in_parenchyma'] or 0):.0f} % of their voxels in parenchyma"
        f" ({100 * (s['share_with_80pct_parenchyma'] or 0):.0f} % of them at >= 80 %); {100 * (s['share_in_training_range'] or 0):.0f} %"
        f" within the training lesions' 5th-95th percentile ({lo:.2f}-{hi:.0f} ml).",
        f"`{env['command']}`, {env['date']}.",
        "",
    ]


def _controls_section(controls: dict | None) -> list[str]:
    if not controls:
        return []
    env = controls["environment"]
    lines = [
        "## Detection on real healthy heads (benchmarks/detection_controls.py)",
        "Whole heads through the app (`--heal-mode detect`), the anomaly map on the model grid: the threshold above which",
        f"nothing of {env['detect_min_ml']} ml or more is found, and what the model's threshold ({controls['model_threshold']})"
        " finds. No head here was used in training.",
        "",
        "| head | used for | nothing found above | found at the model's threshold |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in controls["heads"].items():
        lines.append(
            f"| {name} | {row['role']} | {row['clear_threshold']:.3f} | {row['detected_ml_at_model_threshold']:.2f} ml |"
        )
    return lines + ["", f"`{env['command']}`, {env['date']}.", ""]


def _best_detection(
    detections: list[dict], detect_t_start: int, threshold: float | None = None
) -> tuple[float, float] | None:
    """The calibrations' Dice on lesions of 5 ml or more at the free pass the model is configured
    for, and the threshold it was scored at: the model's own where a run scored it
    (``--also-thresholds``), else the best of the runs' own suggestions."""
    settings = [s for d in detections for s in d.get("settings", []) if s["detect_t_start"] == detect_t_start]
    at_threshold = [
        (d["5ml_plus"]["mean_dice"], float(th))
        for s in settings
        for th, d in s.get("dice_by_size_at", {}).items()
        if threshold is not None and abs(float(th) - threshold) < 1e-9 and d["5ml_plus"]["mean_dice"] is not None
    ]
    if at_threshold:
        return at_threshold[-1]
    scores = [(s["dice_by_size"]["5ml_plus"]["mean_dice"], s["suggested_threshold"]) for s in settings]
    scores = [v for v in scores if v[0] is not None]
    return max(scores) if scores else None


def _verdicts(results: dict, detect_t_start: int, detect_threshold: float | None = None) -> list[str]:
    """What a user can and cannot use this model for, from the results above."""
    lines = ["## What it does and does not do"]
    # The newest full run (exact masks, with controls and detection): the app as it runs now.
    runs = results.get("healing") or []
    healing = next((h for h in reversed(runs) if h.get("controls")), runs[0] if runs else None)
    if healing:
        a = healing["summary"]["all"]
        lines += [
            "- Heals a lesion whose mask is given (`--heal-mode mask`, the default with a mask): the lesion is filled on the",
            "  scan's own grid (a fill chosen per lesion), the model regenerates it, and the fill plus the model's change goes",
            f"  back into the scan; the rest is untouched. Lesion PSNR {a['usb_mask']['psnr']:.2f} dB against {a['wm_fill']['psnr']:.2f}"
            f" for the white-matter fill and {a['none']['psnr']:.2f} for the untouched input (`{healing['_file']}`, above).",
        ]
    residual = (results.get("residual") or [None])[-1]  # the newest: the app as it runs now
    if residual:
        s = residual["summary"]["all"]
        lines.append(
            f"  The model's own change adds {s['app']['psnr'] - s['fill']['psnr']:+.2f} dB to the fill ({s['fill']['psnr']:.2f} ->"
            f" {s['app']['psnr']:.2f}): most of the heal is the fill's."
        )
    detection = []
    best = _best_detection(results.get("detection", []), detect_t_start, detect_threshold)
    if best is not None:
        detection.append(
            f"  On held-out synthetic brains, Dice {best[0]:.2f} with lesions of 5 ml or more (target 0.5; free pass from"
            f" t = {detect_t_start}, threshold {best[1]:g}: table above)."
        )
    false_alarm = False
    for h in results.get("healing", []):
        # End to end: lesioned scans without their masks and healthy controls, through the app.
        if h.get("controls") and h.get("detection_dice_5ml_plus") == h.get("detection_dice_5ml_plus"):  # not NaN
            c = h["controls"]
            false_alarm |= max(r["detected_ml"] for r in c) > 0
            detection += [
                f"  Through the participant level (`{h['command']}`): Dice {h['detection_dice_5ml_plus']:.2f} with lesions of"
                f" 5 ml or more; {len(c)} healthy control(s): at least {100 * min(r['unchanged_fraction'] for r in c):.2f} %"
                f" of the brain bit-identical, {max(r['detected_ml'] for r in c):.1f} ml detected at most (target: >= 99 %,"
                " nothing)."
            ]
    if detection:
        lines += [
            "- Detection without a mask (`--heal-mode detect`, the default without a mask):"
            + (" it can rewrite healthy tissue." if false_alarm else ""),
            *detection,
            "  Give a mask where you have one; without one, look at `desc-detected_mask` before using the healed scan.",
        ]
    generation = results.get("generation")
    if generation:
        shape = {k: generation[k]["shape"]["mmd_rbf"] for k in ("generated", "reference", "blobs")}
        towards_noise = (shape["generated"] - shape["reference"]) / (shape["blobs"] - shape["reference"])
        masks = generation["masks"]
        lines.append(
            f"- Generation (`group --group-task generate`): its samples lie {100 * towards_noise:.0f} % of the way from "
            "held-out brains to smoothed noise by the shape MMD above"
            + (
                "; they are not brains (see the figure): do not use it."
                if towards_noise > 0.25
                else "; they are brains, smoother than real scans (see the figure)."
            )
        )
        if masks.get("empty"):
            n = generation["environment"]["n"]
            lines.append(
                f"  {masks['empty']} of {n} generated lesion masks are empty: the lesion net "
                + ("mostly proposes no lesion." if 2 * masks["empty"] > n else "proposes no lesion in those pairs.")
            )
    else:
        lines.append(
            "- Generation (`group --group-task generate`): not measured for this model (benchmarks/generation.py)."
        )
    quality = results.get("quality")
    if quality:
        e = quality["embed"]["dice_mean"]
        cases = quality.get("embed_cases", [])
        missed = [c for c in cases if c["dice"] < 0.5]
        lines.append(
            f"- Embedding (`--task embed`): the change map matches the requested mask at Dice {e:.2f} (target 0.7)"
            + (
                f"; {len(missed)} of {len(cases)} lesions not drawn ({', '.join(c['size'] for c in missed)}: Dice"
                f" {', '.join(format(c['dice'], '.2f') for c in missed)})"
                if missed
                else ""
            )
            + ". Outside the mask and its blend band the brain is kept as it was."
        )
    return lines + [""]


def _tissue_dice(v: dict) -> float:
    """Mean of the CSF, GM and WM Dice near the lesion (healing.py's tissue scores)."""
    return (v["dice_csf"] + v["dice_gm"] + v["dice_wm"]) / 3


def _class_rows(summary: dict, classes: list[str]) -> list[str]:
    """One table row per method of a healing.py summary: lesion PSNR / SSIM over all lesions and
    per class, then the mean tissue Dice."""
    rows = []
    for m, a in summary["all"].items():
        cells = [
            f"{summary[k][m]['psnr']:.2f} / {summary[k][m]['ssim']:.3f}" if m in summary.get(k, {}) else "n/a"
            for k in ("all", *classes)
        ]
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {_tissue_dice(a):.3f} |")
    return rows


#: Which card section a results file feeds, by its name's prefix (the first that matches).
SECTIONS = (
    ("residual-variants", "residual"),
    ("healing", "healing"),
    ("quality", "quality"),
    ("autoencoder", "autoencoder"),
    ("generation", "generation"),
    ("detection-calibration", "detection"),
    ("detection-controls", "controls"),
    ("lesion-from-generate", "lesion_from"),
)
#: Sections that show every qualifying run; the others show the newest. Healing shows the newest
#: run of each setting (_newest_per_setting).
EVERY_RUN = ("healing", "residual", "detection")
#: benchmarks/healing.py's --mask kinds: the masks the app was given (scored on the true lesion).
MASK_KINDS = {
    "exact": "exact masks",
    "short1": "masks 1 mm short of the lesion",
    "grid2": "masks drawn on a 2 mm grid",
    "large1": "masks 1 mm too large",
}
#: benchmarks/healing.py's --anatomy choices, in the card's order.
ANATOMIES = ("colin-head", "colin", "template")
#: benchmarks/healing.py's lesion classes (its CLASSES): a run of them all is a full healing table.
HEALING_CLASSES = ("subtle", "wmh", "lacune", "infarct", "territorial")


def _sha_of(result: dict) -> str | None:
    return result.get("model_sha256") or result.get("environment", {}).get("model_sha256")


#: Sections whose benchmark runs the lesion net (paired sampling): healing, detection, embedding and
#: the autoencoder's benchmark run only the autoencoder and the brain net.
LESION_NET_SECTIONS = ("generation", "lesion_from")


def lesion_only_parent(meta: dict) -> str | None:
    """The sha256 of the checkpoint this model was fine-tuned from when the fine-tune trained the
    lesion net only (``usb-train --init-checkpoint``, autoencoder and brain steps 0): the weights
    every task but paired sampling runs are that checkpoint's, bit for bit."""
    notes = meta.get("notes", {})
    parent = notes.get("initialised_from") or {}
    steps = notes.get("trained_steps", {})
    if parent.get("model_sha256") and steps.get("autoencoder", 0) == 0 and steps.get("brain", 0) == 0:
        return parent["model_sha256"]
    return None


def measured_results(sha: str, sampling=None, results_dir: Path | None = None, parent: str | None = None) -> dict:
    """The benchmark results measured on the weights with this sha256, by card section.

    Results name the weights they measured (``model_sha256``); a result without it, or of other
    weights, is left out, so that bundling a new model cannot leave the former one's numbers on
    its card. Where several files qualify the newest (by date, then time, then name) is used, except for
    the residual and detection tables, which are all shown (one per run), and the healing tables, one per setting
    (anatomy, masks, classes; the newest by date, then by ``finished`` or git's commit time); generation takes only runs that
    sampled as the bundled config does. ``parent`` (``lesion_only_parent``): results of those
    weights count too, marked ``_parent``, in the sections that do not run the lesion net."""
    results_dir = results_dir or ROOT / "benchmarks" / "results"
    found: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*.json")):
        section = next((s for prefix, s in SECTIONS if path.stem.startswith(prefix)), None)
        if section is None:
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(result, dict) or result.get("superseded_by"):
            continue  # a run whose settings the model no longer has (the file says by which run)
        if _sha_of(result) != sha:
            if parent is None or _sha_of(result) != parent or section in LESION_NET_SECTIONS:
                continue
            result["_parent"] = parent
        env = result.get("environment", {})
        if (
            sampling is not None
            and section == "generation"
            and (env.get("steps"), env.get("ddim_eta", 0.0)) != (sampling.steps, sampling.ddim_eta)
        ):
            continue  # sampled otherwise than the bundled config does
        result.setdefault("_file", path.name)
        found.setdefault(section, []).append(result)

    def when(r: dict) -> tuple[str, str]:
        day = r.get("date") or r.get("environment", {}).get("date") or ""
        return day, r.get("finished") or _committed(results_dir / r["_file"])

    out: dict = {}
    for section, items in found.items():
        items.sort(key=lambda r: (*when(r), r["_file"]))
        out[section] = items if section in EVERY_RUN else items[-1]
    if "healing" in out:
        out["healing"] = _newest_per_setting(out["healing"])
    return out


def _committed(path: Path) -> str:
    """When git last committed ``path`` (ISO 8601), to order runs of one day; a file git does not
    hold yet is the newest ("~" sorts after any date), and outside a git checkout nothing is known."""
    try:
        stamp = subprocess.run(
            ["git", "log", "-1", "--format=%cI", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if stamp.returncode != 0:
        return ""
    return stamp.stdout.strip() or "~"


def _healing_setting(result: dict) -> tuple | str:
    """What a healing.py run measured, read off its command: the anatomy, the masks given, the
    lesion classes, the methods, the grids and whether detection and the sweep ran. Runs of one
    setting repeat each other with the code of their day, so the card keeps the newest."""
    command = result.get("command")
    if not command:
        return result["_file"]
    args = shlex.split(command)

    def option(flag: str, default: str) -> str:
        return args[args.index(flag) + 1] if flag in args[:-1] else default

    return (
        option("--anatomy", "template"),
        option("--mask", "exact"),
        option("--classes", "all"),
        option("--methods", "all"),
        option("--grids", "all"),
        "--no-detect" in args,
        "--no-sweep" in args,
    )


def _newest_per_setting(runs: list[dict]) -> list[dict]:
    """The newest run of each healing setting, in the order the runs came (oldest first). A run
    that leaves out a lesion class the benchmark has (a probe of one class, often of a code
    variant) stays in the docs that discuss it, not on the card."""
    full = [r for r in runs if not _probes_some_classes(r)]
    newest = {_healing_setting(r): r for r in full}
    kept = [r for r in full if newest[_healing_setting(r)] is r]
    return sorted(kept, key=_reading_order)  # stable: one anatomy and mask kind keep their run order


def _reading_order(result: dict) -> tuple[int, int]:
    """Real heads first (the whole head, as users bring it), then the template; exact masks first."""
    setting = _healing_setting(result)
    if not isinstance(setting, tuple):
        return (len(ANATOMIES), len(MASK_KINDS))
    anatomy = ANATOMIES.index(setting[0]) if setting[0] in ANATOMIES else len(ANATOMIES)
    masks = list(MASK_KINDS).index(setting[1]) if setting[1] in MASK_KINDS else len(MASK_KINDS)
    return anatomy, masks


def _probes_some_classes(result: dict) -> bool:
    command = result.get("command") or ""
    args = shlex.split(command)
    if "--classes" not in args[:-1]:
        return False
    classes = set(args[args.index("--classes") + 1].split(","))
    return not set(HEALING_CLASSES) <= classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("training_dir", type=Path, nargs="?", help="a usb-train directory (omit with --card-only)")
    parser.add_argument("--name", default="demo")
    parser.add_argument(
        "--card-only", action="store_true", help="rewrite the bundled model's card from its own files and the results"
    )
    args = parser.parse_args()
    dest = ROOT / "resources" / "models" / args.name
    if not args.card_only:
        if args.training_dir is None:
            parser.error("give a training directory, or --card-only")
        src = args.training_dir / "checkpoint"

        def write(tmp: Path) -> None:
            for item in src.iterdir():
                shutil.copy2(item, tmp / item.name)
            shutil.copy2(args.training_dir / "log.tsv", tmp / "training_log.tsv")

        atomic_directory(dest, write)
    cfg = USBConfig.from_json(dest / "config.json")
    meta = json.loads((dest / "meta.json").read_text())
    stages = stage_summary(dest / "training_log.tsv")
    size_mb = (dest / "model.safetensors").stat().st_size / 2**20
    sha = checkpoint_sha256(dest)
    results = measured_results(sha, cfg.sampling, parent=lesion_only_parent(meta))
    text = card(args.name, cfg, meta, stages, sha, size_mb, results)
    write_text(dest / "README.md", text)
    print(dest)


if __name__ == "__main__":
    main()
