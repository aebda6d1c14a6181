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
        return ["Not measured yet: `python benchmarks/quality.py --model usb_model/resources/models/demo`.", ""]
    lines = [
        f"Model `{q['model']}`, grid {q['grid']} at {q['voxel_size'][0]:g} mm, {q['n_cases']} held-out cases "
        f"(test seed {q['test_seed']}), {q['seconds']:.0f} s in all.",
        "",
        "| method | L1 brain | PSNR brain (dB) | SSIM brain | L1 lesion | PSNR lesion (dB) | SSIM lesion |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, v in q["summary"].items():
        lines.append(f"| {m} | {v['l1_brain']:.4f} | {v['psnr_brain']:.2f} | {v['ssim_brain']:.3f} | {v['l1_lesion']:.4f} | {v['psnr_lesion']:.2f} | {v['ssim_lesion']:.3f} |")
    lines += ["", "PSNR inside the lesion by lesion appearance (dark: as in training; bright: never seen in training):", "",
              "| method | dark | bright |", "| --- | --- | --- |"]
    for m in q["summary"]:
        lines.append(f"| {m} | {q['psnr_lesion_by_kind']['dark'][m]:.2f} | {q['psnr_lesion_by_kind']['bright'][m]:.2f} |")
    e = q["embed"]
    lines += ["", f"Embedding (same masks drawn into the healthy brains): Dice of the thresholded change map "
              f"(|change| > 0.1) with the mask **{e['dice_mean']:.3f}** (target >= 0.7); mean |change| outside the mask {e['mean_abs_change_outside']:.4f}.",
              "", "![quality](figures/quality.png)", ""]
    s = q["summary"]
    checks = [
        ("USB with ACG beats every baseline inside the lesion on PSNR",
         all(s["usb"]["psnr_lesion"] > s[m]["psnr_lesion"] for m in s if m != "usb")),
        ("USB with ACG beats every baseline inside the lesion on SSIM",
         all(s["usb"]["ssim_lesion"] > s[m]["ssim_lesion"] for m in s if m != "usb")),
        ("ACG beats no ACG (lesion PSNR)", s["usb"]["psnr_lesion"] > s["usb_noacg"]["psnr_lesion"]),
        ("whole-brain PSNR >= 32 dB", s["usb"]["psnr_brain"] >= 32),
        ("embedding Dice >= 0.7", e["dice_mean"] >= 0.7),
    ]
    lines += ["Targets (issue 6), as measured:", ""]
    lines += [f"- {'met' if ok else '**missed**'}: {what}" for what, ok in checks]
    lines.append("")
    return lines


def main() -> None:
    sampling = load("sampling-cpu.json")
    synth = load("synth.json")
    participant = load("participant-cpu.json")
    training = load("training-cpu.json")
    quality = load("quality.json")
    out = ["# Benchmarks", "",
           "Every number below is read from `benchmarks/results/*.json`, written by the scripts named; "
           "this page is regenerated with `python benchmarks/report.py`. The machine is the project's "
           "2-core x86-64 CPU box (no GPU was lent to the sessions that measured these), often shared "
           "with other jobs: treat the timings as upper bounds.", ""]
    out += ["## Healing quality against classical lesion filling", "", "`python benchmarks/quality.py --model usb_model/resources/models/demo`", ""]
    out += quality_section(quality)
    out += ["## Sampling speed", "", "`python benchmarks/sampling.py` (random weights: speed does not depend on them)", ""]
    if sampling:
        env = sampling["environment"]
        out += [f"Device: {env['device']}, {env['threads']} threads, torch {env['torch']}, {env['date']}.", "",
                "| preset | what | seconds | peak memory (MB) |", "| --- | --- | --- | --- |"]
        out += [f"| {r['preset']} | {r['what']} | {r['seconds']:.3f} | {r['peak_memory_mb']:.0f} |" for r in sampling["results"]]
        out.append("")
    out += ["## Per-participant wall time by stage", "", "`python benchmarks/participant.py --threads 2`", ""]
    if participant:
        env = participant["environment"]
        out += [f"Input {env['input_shape']} at {env['input_voxel_mm']} mm; model grid {env['model_grid']}; "
                f"{env['device']}, {env['threads']} threads, {env['date']}.", "", "| stage | seconds |", "| --- | --- |"]
        out += [f"| {k} | {v:.2f} |" for k, v in participant["stages_seconds"].items()]
        out += [f"| **preprocessing** (target <= 60 s) | **{participant['preprocessing_seconds']:.1f}** |",
                f"| **whole workflow** (target <= 180 s) | **{participant['workflow_seconds']:.1f}** |",
                f"| peak memory (MB) | {participant['peak_memory_mb']:.0f} |", ""]
    out += ["## Training-data synthesis", "", "`python benchmarks/synth.py`", ""]
    if synth:
        out += [f"{synth['grid']} at {synth['voxel_size_mm']} mm, {synth['threads']} thread: "
                f"**{synth['seconds_per_triplet_mean']:.3f} s** per triplet (mean of {synth['n_triplets']}; target <= 2 s).", ""]
    out += ["## Training speed (`paper` preset)", "", "`python benchmarks/training.py --preset paper`", ""]
    if training:
        out += ["| stage | status | seconds per step | peak memory (MB) |", "| --- | --- | --- | --- |"]
        for r in training["results"]:
            out.append(f"| {r['stage']} | {r['status']} | {r.get('seconds_per_step', float('nan')):.1f} | {r.get('peak_memory_mb', float('nan')):.0f} |")
        out.append("")
    out += ["## Not measured here", "",
            "- GPU numbers (the `paper` heal in <= 3 s on an H100-class GPU, training iterations per second on a GPU): "
            "no GPU was lent to the sessions so far. The scripts above measure them on the device they find.", ""]
    write_text(ROOT / "docs" / "benchmarks.md", "\n".join(out))
    print(ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
