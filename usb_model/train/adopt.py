"""A model's denoisers with another run's autoencoder: how a better autoencoder reaches users.

The CPU campaign trains the autoencoder in runs of its own (issue 22, phases 4-6) that leave
the denoisers alone. Such a run may move the latents a little (phase 6 trains the encoder,
anchored to the latents the denoisers learnt). Whether the denoisers still serve the moved
latents is measured (``learning_curve.py --stage brain``); when they do, the model users get
keeps its denoisers, its sampling settings (calibrated thresholds included) and its template,
and takes the donor's autoencoder. Everything else in the donor (its training section, its
sampling defaults) is the donor run's bookkeeping, not the model's, and is not taken.

The latent scale is the model's and must be the donor's too: the denoisers were trained on
latents times that scale, and a run that recomputed it would hand them latents of another size.

    python -m usb_model.train.adopt MODEL DONOR OUT [--log LOG ...]

OUT becomes a training directory in the shape ``scripts/bundle_demo_model.py`` takes: the
checkpoint in ``OUT/checkpoint`` and, in ``OUT/log.tsv``, the model's training log followed by
the donor's (``--log``: the runs the donor's autoencoder went through, oldest first).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file

from ..atomic import write_text
from ..checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checkpoint_directory,
    checkpoint_sha256,
    load_template_arrays,
    load_weights,
    read_meta,
    save_checkpoint,
)
from ..config import USBConfig
from ..networks import USBNetworks
from .log import LOG_COLUMNS, format_cell, read_log

AUTOENCODER_PREFIX = "autoencoder."


class AdoptError(ValueError):
    """A donor whose autoencoder the model's denoisers cannot take."""


def adopted_networks(model: Path, donor: Path) -> tuple[USBNetworks, dict]:
    """The model's networks with the donor's autoencoder, and the notes that say so."""
    model, donor = checkpoint_directory(model), checkpoint_directory(donor)
    cfg_model = USBConfig.from_json(model / CONFIG_FILE)
    cfg_donor = USBConfig.from_json(donor / CONFIG_FILE)
    for section in ("grid", "denoiser", "schedule"):
        if getattr(cfg_model, section) != getattr(cfg_donor, section):
            raise AdoptError(
                f"{donor}: its {section} differs from {model}'s; its autoencoder was not trained for these denoisers"
            )
    if cfg_donor.latent_shape != cfg_model.latent_shape:
        raise AdoptError(f"{donor}: latent {cfg_donor.latent_shape}, the denoisers take {cfg_model.latent_shape}")
    meta_model, meta_donor = read_meta(model), read_meta(donor)
    scale_model, scale_donor = meta_model.get("latent_scale"), meta_donor.get("latent_scale")
    if scale_model is None or scale_donor != scale_model:
        raise AdoptError(
            f"{donor}: latent scale {scale_donor}, the denoisers were trained at {scale_model}; "
            "continue the donor from the model's autoencoder so that it keeps the scale"
        )
    tensors = load_file(str(model / WEIGHTS_FILE))
    donor_tensors = load_file(str(donor / WEIGHTS_FILE))
    for key in [k for k in tensors if k.startswith(AUTOENCODER_PREFIX)]:
        del tensors[key]
    tensors.update({k: v for k, v in donor_tensors.items() if k.startswith(AUTOENCODER_PREFIX)})
    cfg = cfg_model.replace(autoencoder=cfg_donor.to_dict()["autoencoder"])
    networks = USBNetworks(cfg)
    load_weights(networks, tensors, source=f"{model}'s denoisers with {donor}'s autoencoder")
    notes = dict(meta_model.get("notes", {}))
    donor_notes = meta_donor.get("notes", {})
    steps = dict(notes.get("trained_steps", {}))
    steps["autoencoder"] = donor_notes.get("trained_steps", {}).get("autoencoder", 0)
    notes["trained_steps"] = steps
    notes["autoencoder_from"] = {
        "checkpoint": str(donor),
        "model_sha256": checkpoint_sha256(donor),
        "trained_steps": donor_notes.get("trained_steps", {}),
        "weights": donor_notes.get("autoencoder_weights", "the run's own"),
        "batch_size": cfg_donor.training.batch_size,
        "denoisers_from_sha256": checkpoint_sha256(model),
    }
    if "autoencoder_weights" in donor_notes:
        notes["autoencoder_weights"] = donor_notes["autoencoder_weights"]
    return networks.eval(), {"notes": notes, "training_data": meta_model.get("training_data", {})}


def joined_log(logs: Sequence[Path]) -> str:
    """The logs' rows one after another in the full column set (older logs lack later columns)."""
    lines = ["\t".join(LOG_COLUMNS)]
    for log in logs:
        for row in read_log(log):
            lines.append("\t".join(format_cell(row.get(c)) for c in LOG_COLUMNS))
    return "\n".join(lines) + "\n"


def adopt(model: Path, donor: Path, out: Path, logs: Sequence[Path] = ()) -> Path:
    """Write OUT/checkpoint (the model's denoisers, the donor's autoencoder) and OUT/log.tsv."""
    model = checkpoint_directory(model)
    networks, meta = adopted_networks(model, donor)
    save_checkpoint(
        networks,
        out / "checkpoint",
        training_data=meta["training_data"],
        notes=meta["notes"],
        template=load_template_arrays(model),
    )
    own_log = model / "training_log.tsv"
    write_text(out / "log.tsv", joined_log([own_log, *logs] if own_log.is_file() else list(logs)))
    return out / "checkpoint"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the checkpoint whose denoisers, sampling settings and template stay")
    parser.add_argument("donor", type=Path, help="the checkpoint (or usb-train directory) whose autoencoder is taken")
    parser.add_argument("out", type=Path, help="a new training directory: checkpoint/ and log.tsv")
    parser.add_argument("--log", type=Path, action="append", default=[], help="the donor's training logs, oldest first")
    args = parser.parse_args(argv)
    try:
        print(adopt(args.model, args.donor, args.out, args.log))
    except AdoptError as exc:
        parser.exit(65, f"error: {exc}\n")


if __name__ == "__main__":
    main()
