"""``usb-train``: train a USB model on synthetic training triplets (usb_model.synth).

The brains are varied healthy brains synthesised from the MNI template (or from the
skull-stripped images given with ``--images``, already on the model grid), with pseudo-lesions
drawn on the fly. Resumable: run the same command again to continue, or with larger step
counts to train further. The BIDS App's group level (``bids_usb ... group --group-task train``)
calls the same function with a cohort's preprocessed brains.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


def parse_steps(text: str) -> dict[str, int]:
    """``'autoencoder=600,lesion=1500,brain=1500'`` -> dict, checked against the stage names."""
    from usb_model.train import STAGES

    steps: dict[str, int] = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name not in STAGES or not value.isdigit():
            raise click.BadParameter(f"{part!r}: use stage=N with stage one of {', '.join(STAGES)}")
        steps[name] = int(value)
    return steps


def build_dataset(cfg, seed: int, images=None, lesion_masks=None, length: int = 10_000_000):
    from usb_model.synth import TripletDataset

    return TripletDataset(
        cfg.grid,
        length,
        seed,
        healthy_fraction=cfg.training.healthy_fraction,
        images=images,
        contrast=cfg.grid.contrast,
        lesion_masks=lesion_masks,
    )


def share_threads_on_signal(threads: int) -> None:
    """SIGUSR1: train on one thread; SIGUSR2: back to ``threads`` (scripts/campaign.sh share/full).

    Every op of a multi-threaded step waits for its slowest thread, so a nice-19 trainer on both
    threads of a 2-core machine slows to 3.4 s/step beside one foreground job and all but stops
    beside two (10 steps in 7 min, against 12 s alone); on one thread beside one job it ran at
    2.2 s/step. The thread count changes only the order of float sums, not what is trained."""
    import signal

    import torch

    if threads <= 1 or not hasattr(signal, "SIGUSR1"):
        return
    signal.signal(signal.SIGUSR1, lambda *_: torch.set_num_threads(1))
    signal.signal(signal.SIGUSR2, lambda *_: torch.set_num_threads(threads))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", default="demo", show_default=True, help="Preset name or config JSON.")
@click.option("--steps", "steps_text", default="autoencoder=600,lesion=1500,brain=1500", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--save-every", type=int, default=50, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.option(
    "--init-autoencoder",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Start from these autoencoder weights (a safetensors file of autoencoder.* tensors, e.g. "
    "benchmarks/checkpoints/ae_f2c4_step1300.safetensors); a resumed training state overrides them.",
)
@click.option(
    "--init-checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Start every network from a finished checkpoint directory (a fine-tune, e.g. the lesion "
    "stage again on another mix in a new OUT_DIR): its autoencoder, denoisers (their EMA weights) "
    "and latent scale; the preset must build networks of the same shapes. A resumed training "
    "state overrides it.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="DataLoader workers synthesising triplets [default: none on the CPU, a few on a GPU].",
)
@click.option(
    "--fetch-perceptual",
    is_flag=True,
    help="Download the perceptual loss's LPIPS backbone weights into the torch hub cache (needs "
    "the network and the train extra: pip install 'bids-usb[train]') and exit; training then finds them offline.",
)
def main(
    out_dir,
    preset,
    steps_text,
    seed,
    device,
    threads,
    save_every,
    log_every,
    resume,
    init_autoencoder,
    init_checkpoint,
    workers,
    fetch_perceptual,
):
    import torch

    if fetch_perceptual:
        from usb_model.train.losses import fetch_perceptual_weights

        try:
            click.echo(str(fetch_perceptual_weights()))
        except (RuntimeError, OSError) as err:
            raise click.ClickException(f"cannot fetch the perceptual loss's weights: {err}") from err
        return

    from usb_model.config import load_config
    from usb_model.device import pick_device
    from usb_model.train import train_all
    from usb_model.train.data import default_num_workers

    if threads:
        torch.set_num_threads(threads)
    share_threads_on_signal(torch.get_num_threads())
    # Progress (one line per logged step) on stderr; stdout gets the checkpoint's path only.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("usb_model").setLevel(logging.INFO)
    cfg = load_config(preset)
    steps = parse_steps(steps_text)
    dataset = build_dataset(cfg, seed)
    options = {}
    if init_autoencoder is not None and init_checkpoint is not None:
        raise click.UsageError("give --init-autoencoder or --init-checkpoint, not both")
    if init_autoencoder is not None:
        options["networks"] = networks_with_autoencoder(cfg, init_autoencoder)
    if init_checkpoint is not None:
        options["networks"], options["initialised_from"] = networks_from_checkpoint(cfg, init_checkpoint)
    device = pick_device(device)
    train_all(
        cfg,
        dataset,
        out_dir,
        steps,
        device=device,
        num_workers=default_num_workers(device) if workers is None else workers,
        resume=resume,
        log_every=log_every,
        save_every=save_every,
        seed=seed,
        training_data={"source": "usb_model.synth from the MNI ICBM 2009a template", "seed": seed},
        **options,
    )
    click.echo(str(Path(out_dir) / "checkpoint"))


def networks_with_autoencoder(cfg, path: Path):
    """Fresh networks for ``cfg`` with the autoencoder's weights from ``path`` (checked: every
    autoencoder tensor present and of the config's shape)."""
    from safetensors.torch import load_file

    from usb_model.checkpoint import load_weights
    from usb_model.networks import USBNetworks

    networks = USBNetworks(cfg)
    prefix = "autoencoder."
    tensors = {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    load_weights(networks.autoencoder, tensors, source=path)
    return networks


def networks_from_checkpoint(cfg, directory: Path):
    """Networks for ``cfg`` holding a finished checkpoint's weights and latent scale, and what to
    record of where they came from. The checkpoint's config may differ in training and sampling
    settings (that is the point of a fine-tune) but must build the same tensors."""
    from usb_model.checkpoint import (
        CheckpointError,
        checkpoint_directory,
        checkpoint_sha256,
        load_checkpoint,
        load_weights,
        read_meta,
    )
    from usb_model.networks import USBNetworks
    from usb_model.train.widen import widened_networks

    directory = checkpoint_directory(directory)
    try:
        source = load_checkpoint(directory)
        narrower = source.cfg.autoencoder.decoder_width < cfg.autoencoder.decoder_width
        if narrower:
            networks = widened_networks(cfg, source)
        else:
            networks = USBNetworks(cfg)
            load_weights(networks, source.state_dict(), source=directory)
    except (CheckpointError, ValueError) as err:
        raise click.ClickException(
            f"--init-checkpoint {directory}: {err} (the preset must build the same networks, "
            "or the same with a wider decoder)"
        ) from err
    lineage = {
        "checkpoint": str(directory),
        "model_sha256": checkpoint_sha256(directory),
        "trained_steps": read_meta(directory).get("notes", {}).get("trained_steps"),
    }
    if narrower:
        lineage["decoder_widened"] = [source.cfg.autoencoder.decoder_width, cfg.autoencoder.decoder_width]
    return networks, lineage


if __name__ == "__main__":
    main()
