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
import shutil
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


def card(
    name: str,
    cfg: USBConfig,
    meta: dict,
    stages: dict,
    sha: str,
    size_mb: float,
    quality: dict | None,
    healing: dict | None = None,
    autoencoder: dict | None = None,
    generation: dict | None = None,
    residual: dict | None = None,
) -> str:
    g, t = cfg.grid, cfg.training
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
        f"  {cfg.schedule.beta_start:g}..{cfg.schedule.beta_end:g}.",
        f"- Weights: `model.safetensors`, {size_mb:.1f} MB, sha256 `{sha}`; latent scale {meta.get('latent_scale', float('nan')):.4f};",
        f"  empty-lesion condition: {meta.get('empty_condition')}.",
        "",
        "## Training data",
        "Healthy brains synthesised on the fly from the MNI ICBM 2009a template shipped in nilearn's",
        "wheel (random affine and elastic deformation, per-tissue contrast, gamma, bias, noise, blur),",
        "with pseudo-lesions (Perlin shapes advected by divergence-free flows, WMH-like spots to",
        f"stroke-like territories) drawn in as T1w darkening (usb_model.synth; seed {meta.get('training_data', {}).get('seed', 'n/a')}).",
        f"{t.healthy_fraction:.0%} of the brain net's samples are healthy (the empty-lesion condition). No real scan of a",
        "patient or of any person other than the template was used.",
        "",
        "## Training",
        "| stage | steps | batch | seconds | last logged loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage in ("autoencoder", "lesion", "brain"):
        s = stages.get(stage)
        if s:
            lines.append(f"| {stage} | {s['steps']} | {t.batch_size} | {s['seconds']:.0f} | {s['loss']:.4f} |")
    total = sum(s["seconds"] for s in stages.values())
    lines += [
        "",
        f"Hardware: 2 CPU cores (x86-64), no GPU, shared with other jobs; {total / 3600:.2f} h of training in all",
        "(seconds are the trainer's own clock: saves excluded). Command:",
        "`usb-train DIR --preset demo --steps autoencoder=400,lesion=300,brain=N --threads 2` (resumable).",
        "The curves are in `training_log.tsv`.",
        "",
    ]
    if quality:
        s = quality["summary"]
        lines += [
            "## Measured quality (benchmarks/quality.py)",
            f"Held-out synthetic test set, {quality['n_cases']} cases (test seed {quality['test_seed']}), model grid; every",
            "method composited the same way with the true mask. PSNR in dB (data range 1).",
            "",
            "| method | PSNR brain | SSIM brain | PSNR lesion | SSIM lesion | L1 lesion |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for m, v in s.items():
            lines.append(
                f"| {m} | {v['psnr_brain']:.2f} | {v['ssim_brain']:.3f} | {v['psnr_lesion']:.2f} | {v['ssim_lesion']:.3f} | {v['l1_lesion']:.4f} |"
            )
        e = quality["embed"]
        lines += [
            "",
            f"Embedding: Dice of the change map with the requested mask {e['dice_mean']:.3f}; mean |change| outside the mask",
            f"{e['mean_abs_change_outside']:.4f}. See docs/benchmarks.md for what these numbers do and do not show.",
            "",
        ]
    if autoencoder:
        h = autoencoder["summary"]["healthy"]
        lines += [
            "## Autoencoder reconstruction (benchmarks/autoencoder.py)",
            f"Encode then decode, no diffusion, {autoencoder['environment']['n']} held-out synthetic brains (seed "
            f"{autoencoder['environment']['test_seed']}), inside the brain: PSNR {h['psnr_brain']:.2f} dB, SSIM {h['ssim_brain']:.3f},",
            f"mean absolute error {h['l1_brain']:.4f} (target: >= 30 dB{', missed' if h['psnr_brain'] < 30 else ''}). Everything the model outputs",
            "passes through this decoder; healing hides most of its error (see below), generation does not.",
            "",
        ]
    if healing:
        hs = healing["summary"]
        used = healing.get("parameters", {}).get("usb_mask", {})
        lines += [
            "## Healing native scans through the app (benchmarks/healing.py)",
            f"{healing['n_scans']} synthetic T1w scans at 1 mm and 1x1x3 mm (oblique), lesion classes from white-matter spots to",
            "territorial infarcts, through `bids_usb ... participant`; BraTS inpainting metrics inside the lesion, single sample",
            f"(`{healing['command']}`, {healing['date']}). Lesion PSNR / SSIM per class; tissue Dice (Atropos): mean of CSF,",
            "GM and WM inside the lesion grown by 3 mm.",
            "",
            "| method | all | wmh | lacune | infarct | territorial | tissue Dice |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += _class_rows(hs)
        lines += [
            "",
            "`usb_mask` is the app's default with a mask"
            + (
                f" (as its sidecars record: t_start {used.get('TStart')}, stride {used.get('Stride')}, fill "
                f"{used.get('Fill')}, fill residual {used.get('FillResidual')}, band {used.get('BandMM')} mm)"
                if used
                else ""
            )
            + "; `usb_acg` the paper's mask-free ACG healing (t_start 300, 300 steps); `usb_detect` healing without",
            "a mask. Per grid, the step sweep and the targets: docs/benchmarks.md.",
            "",
        ]
    if residual:
        lines += [
            "## How the default heal was chosen: fill plus the model's change (benchmarks/healing.py, healing-residual.json)",
            f"{residual['n_scans']} of the same scans, single sample. `usb_mask` puts the decoded healed brain into the lesion;",
            "`usb_mask_auto_residual` (the default since: `--fill auto --fill-residual`) the fill made on the scan's own grid",
            "plus the model's change to it. Lesion PSNR / SSIM per class; tissue Dice: mean of CSF, GM, WM near the lesion.",
            "",
            "| method | all | wmh | lacune | infarct | territorial | tissue Dice |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += _class_rows(residual["summary"])
        lines.append("")
    if generation:
        env, gen, ref, blobs, masks = (
            generation[k] for k in ("environment", "generated", "reference", "blobs", "masks")
        )
        lines += [
            "## Generation (benchmarks/generation.py)",
            f"{env['n']} pairs from noise ({env['steps']} steps, {env['device']}) against held-out synthetic brains (seed "
            f"{env['test_seed']}): MMD^2 in the brain-shape feature (the volume pooled to 8^3) {gen['shape']['mmd_rbf']:.3f}, where",
            f"a second held-out set gives {ref['shape']['mmd_rbf']:.3f} and smoothed noise {blobs['shape']['mmd_rbf']:.3f}; in the intensity",
            f"histogram {gen['intensity']['mmd_rbf']:.3f} (held-out {ref['intensity']['mmd_rbf']:.3f}, noise {blobs['intensity']['mmd_rbf']:.3f}); "
            f"KID (shape) {gen['shape']['kid_mean']:.3f}.",
            f"Generated masks: median {masks['median_volume_ml']:.0f} ml in {masks['median_components']:.0f} pieces, "
            f"{100 * masks['mean_in_parenchyma']:.0f} % of them in the template's parenchyma.",
            "",
            "![generated pairs](../../../docs/figures/generation.png)",
            "",
        ]
    generation_verdict = (
        "- Generation (`group --group-task generate`): not measured for this model (benchmarks/generation.py)."
    )
    if generation:
        # Where the samples sit between held-out brains (0) and smoothed noise (1), by the shape MMD.
        shape = {k: generation[k]["shape"]["mmd_rbf"] for k in ("generated", "reference", "blobs")}
        towards_noise = (shape["generated"] - shape["reference"]) / (shape["blobs"] - shape["reference"])
        generation_verdict = (
            f"- Generation (`group --group-task generate`): its samples lie {100 * towards_noise:.0f} % of the way from "
            "held-out brains to smoothed noise by the shape MMD above"
            + (
                "; they are not brains (see the figure): do not use it."
                if towards_noise > 0.25
                else "; look at the figure before using them."
            )
        )
    rv = (_results("residual-variants") or {}).get("summary", {}).get("all")
    rv = rv or {k: {"psnr": float("nan"), "tissue_dice": float("nan")} for k in ("fill", "full")}
    hs = (healing or {}).get("summary", {}).get("all", {})

    def tissue(m: str) -> float:
        return _tissue_dice(hs[m]) if m in hs else float("nan")

    def psnr(m: str) -> float:
        return hs[m]["psnr"] if m in hs else float("nan")

    lines += [
        "## What it does and does not do",
        "- Heals a lesion whose mask is given (`--heal-mode mask`, the default with a mask): the lesion is filled (white-matter",
        "  fill inside white matter, template graft elsewhere), the model regenerates it, and the fill plus the model's change",
        "  (bounded by the fill's local contrast) goes back into the scan, with a blend band of 0-2 mm; the rest is untouched.",
        f"  Lesion PSNR {psnr('usb_mask'):.2f} dB against {psnr('wm_fill'):.2f} for the white-matter fill; tissue Dice near the",
        f"  lesion {tissue('usb_mask'):.3f} against {tissue('wm_fill'):.3f} (the former 1-4 mm band: {tissue('usb_mask_band14'):.3f}).",
        "  But the model itself adds little: the same fill without the model's change scores",
        f"  {rv['fill']['psnr']:.2f} dB against {rv['full']['psnr']:.2f} (benchmarks/residual_variants.py), on template-derived",
        "  test brains that favour a template graft.",
        "- Does not find lesions without a mask: detection (`--heal-mode detect`, the default without a mask) is built, but this",
        "  model's free healing pass changes healthy anatomy more than it changes lesions, so its threshold, calibrated on",
        "  healthy brains (benchmarks/detection_calibration.py), detects nothing: scans come back unchanged. Give a mask.",
        generation_verdict,
        "",
        "## What it is not",
        "- Not trained on real patients, on real healthy cohorts, on FLAIR, or at the paper's 1 mm / 160^3 scale.",
        "- Not for clinical use, and not a reproduction of the paper's reported numbers.",
        "- Trained for minutes-to-hours on a CPU: its autoencoder is far from the paper's (blurry decodes), and the paper's",
        "  mask-free ACG healing (`--heal-mode acg`) leaves large lesions in place.",
        "",
    ]
    return "\n".join(lines)


def _tissue_dice(v: dict) -> float:
    """Mean of the CSF, GM and WM Dice near the lesion (healing.py's tissue scores)."""
    return (v["dice_csf"] + v["dice_gm"] + v["dice_wm"]) / 3


def _class_rows(summary: dict) -> list[str]:
    """One table row per method of a healing.py summary: lesion PSNR / SSIM over all lesions and
    per class, then the mean tissue Dice."""
    rows = []
    for m, a in summary["all"].items():
        cells = [
            f"{summary[k][m]['psnr']:.2f} / {summary[k][m]['ssim']:.3f}" if m in summary.get(k, {}) else "n/a"
            for k in ("all", "wmh", "lacune", "infarct", "territorial")
        ]
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {_tissue_dice(a):.3f} |")
    return rows


def _results(name: str) -> dict | None:
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
    autoencoder = _results("autoencoder")
    if autoencoder and (ROOT / autoencoder["environment"]["model"]).resolve() != dest.resolve():
        autoencoder = None  # measured on another model
    residual = _results("healing-residual")
    generation = _results("generation-cuda") or _results("generation-cpu")
    if generation and (ROOT / generation["environment"]["model"]).resolve() != dest.resolve():
        generation = None
    text = card(
        args.name,
        cfg,
        meta,
        stages,
        checkpoint_sha256(dest),
        size_mb,
        _results("quality"),
        _results("healing"),
        autoencoder,
        generation,
        residual,
    )
    write_text(dest / "README.md", text)
    print(dest)


if __name__ == "__main__":
    main()
