"""The authors' three files -> one ordinary bids_usb checkpoint (safetensors + JSON + model card).

What the checkpoint records, so that nothing about the imported model is implicit:
- the networks' shapes read from the files, with the authors' residual block
  (``denoiser.res_block = "scale_shift"``);
- the paper's grid (160^3 at 1 mm in MNI space), their intensity rule (min-max to [0, 1],
  ``grid.normalisation = "minmax"``), latent scale 0.18215, the empty-lesion condition they use
  at inference (an all-zeros latent, ``training.empty_condition = "zeros"``), and their sampling
  defaults (t_start 300 healing / 500 embedding, alpha0 20, k 0.5, DDIM eta 0);
- the SHA-256 of each source file, in ``meta.json`` and in the model card ``README.md``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..atomic import write_text
from ..checkpoint import WEIGHTS_FILE, checkpoint_sha256, load_weights, read_meta, save_checkpoint
from ..config import USBConfig, load_preset
from ..networks import USBNetworks
from .layout import (
    AutoencoderShape,
    DenoiserShape,
    autoencoder_shape,
    convert_state,
    denoiser_shape,
    split_autoencoder,
    strip_data_parallel,
)
from .pickles import UpstreamError, read_lightning_state_dict, read_pth_state_dict

LATENT_SCALE = 0.18215  # the Stable Diffusion constant the authors multiply latents by
PAPER_GRID = (160, 160, 160)
PAPER_VOXEL_MM = 1.0
UPSTREAM_SAMPLING = {
    "steps": 300,
    "t_start_heal": 300,
    "t_start_embed": 500,
    "edit_stride": 1,
    "mask_stride": 3,  # mask-mode healing (this project's, from t = 100): 34 steps, as the demo model
    "alpha0": 20.0,
    "k": 0.5,
    "lcg_eta": 1.0,
    "ddim_eta": 0.0,
    "mask_threshold": 0.5,
}
ROLES = ("lesion", "brain", "vae")


@dataclass
class SourceFile:
    role: str
    path: Path
    sha256: str
    size: int

    def record(self) -> dict:
        return {"file": self.path.name, "sha256": self.sha256, "bytes": self.size}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upstream_config(
    denoiser: DenoiserShape,
    autoencoder: AutoencoderShape,
    grid_shape=PAPER_GRID,
    voxel_mm: float = PAPER_VOXEL_MM,
    num_head_channels: int | None = None,
) -> USBConfig:
    """The paper preset with the shapes read from the files and the authors' conventions."""
    levels = len(autoencoder.channels)
    return load_preset("paper").replace(
        name="usb-upstream",
        grid={
            "shape": tuple(grid_shape),
            "voxel_size": (float(voxel_mm),) * 3,
            "contrast": "T1w",
            "normalisation": "minmax",
        },
        autoencoder={
            "channels": autoencoder.channels,
            "latent_channels": autoencoder.latent_channels,
            "num_res_blocks": autoencoder.num_res_blocks,
            "norm_num_groups": 32,
            "attention_levels": (False,) * levels,
        },
        denoiser={
            "channels": denoiser.channels,
            "attention_levels": denoiser.attention_levels,
            "num_res_blocks": denoiser.num_res_blocks,
            "norm_num_groups": 32,
            "num_head_channels": num_head_channels or denoiser.num_head_channels,
            "res_block": "scale_shift",
        },
        sampling=UPSTREAM_SAMPLING,
        training={"empty_condition": "zeros", "latent_injection": 0.0},
    )


def import_upstream(
    lesion: str | Path,
    brain: str | Path,
    vae: str | Path,
    out_dir: str | Path,
    *,
    grid_shape=PAPER_GRID,
    voxel_mm: float = PAPER_VOXEL_MM,
    num_head_channels: int | None = None,
    with_template: bool = True,
) -> Path:
    """Convert the authors' ``usb_lesion.pth``, ``usb_brain.pth`` and ``vae.ckpt`` into ``out_dir``.

    Every failure is an ``UpstreamError`` naming the file and the tensor at fault. The template
    (for the BIDS App's registration) is the MNI ICBM 2009a template on the grid; it needs nilearn.
    """
    paths = {"lesion": Path(lesion), "brain": Path(brain), "vae": Path(vae)}
    for role, path in paths.items():
        if not path.is_file():
            raise UpstreamError(f"{path}: no such file (the --{role} file)")
    sources = {role: SourceFile(role, p, sha256_file(p), p.stat().st_size) for role, p in paths.items()}
    denoisers = {role: strip_data_parallel(read_pth_state_dict(paths[role])) for role in ("lesion", "brain")}
    vae_state = split_autoencoder(read_lightning_state_dict(paths["vae"]), str(paths["vae"]))

    shapes = {role: denoiser_shape(state, str(paths[role])) for role, state in denoisers.items()}
    if shapes["lesion"] != shapes["brain"]:
        raise UpstreamError(
            f"{paths['lesion']} and {paths['brain']}: the two denoisers differ in shape "
            f"({shapes['lesion']} vs {shapes['brain']}); were they swapped with another model's?"
        )
    ae_shape = autoencoder_shape(vae_state, str(paths["vae"]))
    if ae_shape.latent_channels != shapes["brain"].latent_channels:
        raise UpstreamError(
            f"{paths['vae']}: latent channels {ae_shape.latent_channels} do not match the denoisers' "
            f"{shapes['brain'].latent_channels}"
        )
    cfg = upstream_config(shapes["brain"], ae_shape, grid_shape, voxel_mm, num_head_channels)
    try:
        latent_grid = cfg.latent_shape[1:]
    except ValueError as exc:
        raise UpstreamError(f"{paths['vae']}: {exc}") from exc
    factor = 2 ** (len(cfg.denoiser.channels) - 1)
    if any(s % factor for s in latent_grid):
        raise UpstreamError(
            f"{paths['brain']}: the latent grid {latent_grid} is not divisible by the denoiser's "
            f"downsampling factor {factor}; choose another grid"
        )

    networks = USBNetworks(cfg)
    tensors = {}
    for prefix, module, state, role in (
        ("autoencoder.", networks.autoencoder, vae_state, "vae"),
        ("lesion.", networks.lesion, denoisers["lesion"], "lesion"),
        ("brain.", networks.brain, denoisers["brain"], "brain"),
    ):
        kind = "autoencoder" if role == "vae" else "denoiser"
        tensors.update({prefix + k: v for k, v in convert_state(module, state, kind, str(paths[role])).items()})
    tensors["latent_scale"] = torch.tensor(LATENT_SCALE)
    load_weights(networks, tensors, source="the converted upstream weights")

    template = None
    if with_template:
        from ..template import load_template

        t = load_template(cfg.grid)
        template = {"t1w": t.t1w, "brain_mask": t.brain_mask, "affine": t.affine}
    upstream = {role: src.record() for role, src in sources.items()}
    out = save_checkpoint(
        networks,
        out_dir,
        template=template,
        training_data={
            "source": "the authors' published USB weights (Wang & Liu; github.com/jhuldr/USB)",
            "cohorts": "HCP, ADHD200, OASIS3 healthy T1w with pseudo-lesions from ATLAS and ISLES masks; ADNI (WMH)",
            "upstream_files": upstream,
        },
        notes={"converter": f"usb-import-upstream (bids_usb {__version__})", "converted": time.strftime("%Y-%m-%d")},
    )
    write_text(
        out / "README.md",
        model_card(cfg, read_meta(out), sources, checkpoint_sha256(out), (out / WEIGHTS_FILE).stat().st_size / 2**20),
    )
    return out


def model_card(cfg: USBConfig, meta: dict, sources: dict[str, SourceFile], sha: str, size_mb: float) -> str:
    g, a, d, s = cfg.grid, cfg.autoencoder, cfg.denoiser, cfg.sampling
    rows = [f"| `--{role}` | `{src.path.name}` | {src.size:,} | `{src.sha256}` |" for role, src in sources.items()]
    return "\n".join(
        [
            "# USB model card: the authors' weights, imported",
            "",
            "The networks of USB (Wang & Liu, *USB: Unified Synthetic Brain Framework for Bidirectional",
            "Pathology-Healthy Generation and Editing*) as the authors trained and published them",
            "(github.com/jhuldr/USB), converted by `usb-import-upstream` into a bids_usb checkpoint.",
            "The weights are the authors'; their terms of use apply. bids_usb did not train or retrain them.",
            "",
            "## Source files",
            "| option | file | bytes | sha256 |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            "Read without unpickling arbitrary objects: `.pth` with torch's weights-only loader, `.ckpt`",
            "with a restricted reader that rebuilds tensors only. Dropped: the discriminator, and the",
            "denoisers' `cond_emb_proj` and attention `proj_attn` layers, which their forward pass never uses.",
            "",
            "## What it is",
            f"- Input: skull-stripped {g.contrast}, {'x'.join(str(n) for n in g.shape)} at {g.voxel_size[0]:g} mm"
            " in MNI space",
            f"  (bids_usb registers each scan to MNI152NLin2009aSym); intensities min-max to [0, 1] (`{g.normalisation}`).",
            f"- Autoencoder channels {list(a.channels)}, {a.num_res_blocks} residual blocks per level, latent "
            f"{'x'.join(str(v) for v in cfg.latent_shape)}, latent scale {meta.get('latent_scale', float('nan')):g}.",
            f"- Denoisers (USB_lesion, USB_brain): channels {list(d.channels)}, attention {list(d.attention_levels)},",
            f"  {d.num_res_blocks} residual block(s) per level, scale-and-shift time conditioning (`{d.res_block}`).",
            f"- Weights: `model.safetensors`, {size_mb:.1f} MB, sha256 `{sha}`.",
            f"- Empty-lesion condition: `{meta.get('empty_condition')}` (an all-zeros latent, as the authors' scripts).",
            f"- Sampling defaults: t_start {s.t_start_heal} (healing, `--heal-mode acg`), {s.t_start_embed} (embedding),",
            f"  stride {s.edit_stride}; mask-mode healing from t_start {s.t_start_mask} at stride {s.mask_stride or s.edit_stride}"
            " (this project's mode, not the paper's: its step count is the demo model's, unmeasured on these weights);",
            f"  ACG alpha0 {s.alpha0:g}, k {s.k:g}; DDIM eta {s.ddim_eta:g}; generation {s.steps} steps.",
            "",
            "## Training data (the authors')",
            "Healthy T1w brains from HCP, ADHD200 and OASIS3 with pseudo-lesions drawn from ATLAS and ISLES",
            "stroke masks; ADNI scans with white-matter hyperintensities (see the paper). bids_usb has not",
            "measured this model's quality itself.",
            "",
            "## Differences from the authors' scripts",
            "See docs/upstream.md in bids_usb: the first healing step, the posterior mean versus a",
            "sample, the guidance details and the preprocessing differ, and are listed there.",
            "",
        ]
    )
