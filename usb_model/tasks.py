"""The four USB tasks on one reverse-diffusion loop.

- ``generate_pairs``: lesion masks and brains together from noise (paper eq. 6-8);
- ``generate_from_mask``: a brain for a given lesion mask (eq. 9);
- ``generate_lesion``: a lesion mask for a given brain, from paired sampling;
- ``heal``: pathology-to-healthy editing with Anatomy Consistency Guidance (eq. 12-13);
- ``embed``: healthy-to-pathology editing with ACG times Lesion Consistency Guidance (eq. 14-15).

Everything here works on the model grid: images in [0, 1] and binary masks shaped like
``cfg.grid.shape``. Mapping native scans to that grid is the BIDS App's job, not this module's.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, load_checkpoint, load_template_arrays
from .composite import blend_weight, heal_composite, within_local_range
from .composite import composite as blend
from .config import USBConfig
from .costs import CostLog, NoCosts
from .detection import anomaly_map, detect_lesions
from .device import autocast, make_generator, pick_device, statistics_autocast
from .diffusion import Diffusion
from .fill import GIVEN_DARK_RATIO, brain_region, intensity_line, prefill
from .guidance import acg_weight, apply_guidance, lcg_weight, soft_lesion_map
from .networks import USBNetworks
from .passes import (
    MARGIN_LATENT,
    Box,
    GroupNormStatistics,
    decode_box,
    encode_box,
    max_pass_voxels,
    memory_budget_gb,
)

log = logging.getLogger("usb_model.sampling")


@dataclass
class EditResult:
    """An edited brain on the model grid.

    ``image``: the mean over samples (composited into the input when asked); ``std``: their
    voxelwise std (uncertainty); ``samples``; ``region``: the blend weight that put the edit
    back (None when not composited). For healing also: ``healed``, the decoded healed brain with
    its intensities matched to the input's; ``change``, ``decode(healed) - decode(input)``, the
    edit with the autoencoder's reconstruction error cancelled; ``lesion``: the lesion healed
    (given or detected); ``anomaly``: the detection map (detect mode); ``params``: every
    parameter used; ``fill_change`` (with ``fill_residual``): ``healed - decode(filled)``, the
    model's change to the fill, which the app adds to a fill made at the scan's resolution.
    """

    image: torch.Tensor
    std: torch.Tensor | None
    samples: torch.Tensor
    region: torch.Tensor | None
    healed: torch.Tensor | None = None
    change: torch.Tensor | None = None
    lesion: torch.Tensor | None = None
    anomaly: torch.Tensor | None = None
    params: dict | None = None
    fill_change: torch.Tensor | None = None


@dataclass
class GenerationResult:
    """Generated brains (n, *grid) in [0, 1] and their lesion masks (n, *grid) in {0, 1}."""

    images: torch.Tensor
    masks: torch.Tensor


@dataclass
class LesionProposal:
    """A lesion generated for a brain (``USB.generate_lesion``): the mask (grid) in {0, 1}, cut to
    the brain; the generated brain it came with; how it was chosen (``info``)."""

    mask: torch.Tensor
    brain: torch.Tensor
    info: dict


@dataclass
class _Guidance:
    """ACG (and optionally LCG) towards the input latent y0 after each reverse step."""

    y0: torch.Tensor
    t_norm: float
    alpha0: float
    k: float
    acg: bool
    lesion_weight: torch.Tensor | None = None  # lambda_lesion from LCG, or None

    def weight(self, y0_hat: torch.Tensor, t: int) -> torch.Tensor:
        if not self.acg:  # LCG alone (an ablation): keep everything but the lesion
            return self.lesion_weight
        w = acg_weight(self.y0, y0_hat, t, self.alpha0, self.k, self.t_norm)
        return w if self.lesion_weight is None else w * self.lesion_weight


HEAL_MODES = ("mask", "detect", "acg")
# Autoencoder passes of mask-mode healing: "edit", only the boxes the output takes (the edit
# region's, grown by the decoder's reach; the lesion's for the filled image); "full", every pass
# over the whole grid. The other modes and tasks always pass over the whole grid.
AE_PASSES = ("edit", "full")


class USB:
    """A trained USB model ready to sample: networks, diffusion schedule and device."""

    def __init__(
        self,
        networks: USBNetworks,
        device: str | torch.device | None = None,
        template_t1w: np.ndarray | None = None,
        *,
        ae_passes: str = "edit",
        mem_gb: float | None = None,
        ae_margin: int = MARGIN_LATENT,
        costs: CostLog | None = None,
    ):
        if ae_passes not in AE_PASSES:
            raise ValueError(f"unknown ae_passes {ae_passes!r}; choose one of {', '.join(AE_PASSES)}")
        self.device = pick_device(device)
        self.networks = networks.to(self.device).eval()
        self.cfg: USBConfig = networks.cfg
        self.diffusion = Diffusion(self.cfg.schedule)
        # The template on the model grid, for the graft that mask-aware healing starts from;
        # without it the graft falls back to a white-matter fill.
        self.template_t1w = template_t1w
        self.ae_passes = ae_passes
        # The memory the autoencoder's boxes are cut to fit (--mem, else the host's available
        # memory; usb_model.passes.memory_budget_gb), and where each stage's cost is recorded.
        self.mem_gb = mem_gb
        self.ae_margin = ae_margin  # context around a cropped pass, in latent voxels
        self.costs = costs if costs is not None else NoCosts()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None, **options) -> USB:
        try:
            template = load_template_arrays(path)["t1w"]
        except CheckpointError:
            template = None
        return cls(load_checkpoint(path), device=device, template_t1w=template, **options)

    # --- the four tasks -----------------------------------------------------------------------

    @torch.no_grad()
    def generate_pairs(
        self, n: int = 1, *, seed: int = 0, steps: int | None = None, ddim_eta: float | None = None
    ) -> GenerationResult:
        """Joint reverse process: at every step the lesion net sees (x_t, y_t) and its clean
        estimate x0_hat conditions the brain net."""
        gen = make_generator(seed, self.device)
        timesteps = self.diffusion.generation_timesteps(steps or self.cfg.sampling.steps)
        x_t = self._noise(n, gen)
        y_t = self._noise(n, gen)
        y0, x0 = self._reverse(timesteps, y_t, x_t=x_t, generator=gen, ddim_eta=ddim_eta)
        masks = self._decode(x0)[:, 0] > self.cfg.sampling.mask_threshold
        return GenerationResult(images=self._decode(y0)[:, 0].cpu(), masks=masks.float().cpu())

    @torch.no_grad()
    def generate_lesion(
        self,
        image,
        brain_mask=None,
        *,
        n_candidates: int = 4,
        seed: int = 0,
        steps: int | None = None,
        min_parenchyma: float = 0.8,
    ) -> LesionProposal:
        """A lesion mask generated for this brain: USB's paired sampling proposes lesions, the
        one whose generated brain is closest to ``image`` is kept, cut to the brain.

        Why not the lesion net conditioned on the input itself: it learnt p(lesion | brain) from
        lesioned brains and healthy ones with empty masks, so given a healthy brain it says, as
        it should, "no lesion" (the healthy-brain -> no-lesion rule detection relies on).
        Paired sampling from noise draws lesion and brain jointly from what the model learnt;
        on the shared template grid, the pair whose brain is most like the input (latent
        distance inside the input's brain) carries a lesion placed for that anatomy. Voxels
        outside ``brain_mask`` (default: ``image > 0``) are dropped; candidates with less than
        ``min_parenchyma`` of their voxels in the brain, or none, are passed over when another
        qualifies. Embed the result with ``embed`` (ACG x LCG) to draw it into the brain.
        """
        image_t = self._volume(image, "image")
        brain = (image_t > 0) if brain_mask is None else self._volume(brain_mask, "brain mask").gt(0.5)
        if not bool(brain.any()):
            raise ValueError("generate_lesion needs a brain: the image (or brain mask) is empty")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1; got {n_candidates}")
        pairs = self.generate_pairs(n_candidates, seed=seed, steps=steps)
        y0 = self.networks.encode(image_t)
        inside = F.adaptive_avg_pool3d(brain.float(), self.cfg.latent_shape[-3:]) > 0.5
        candidates = []
        for i in range(n_candidates):
            mask = pairs.masks[i].to(self.device).bool()
            voxels = int(mask.sum())
            fraction = float((mask & brain[0, 0]).sum()) / voxels if voxels else 0.0
            latent = self.networks.encode(pairs.images[i][None, None].to(self.device))
            distance = float(((latent - y0).pow(2) * inside).sum() / inside.sum().clamp(min=1))
            candidates.append({"candidate": i, "voxels": voxels, "parenchyma_fraction": fraction, "distance": distance})
        qualified = [c for c in candidates if c["voxels"] and c["parenchyma_fraction"] >= min_parenchyma]
        pool = qualified or [c for c in candidates if c["voxels"]] or candidates
        chosen = min(pool, key=lambda c: c["distance"])
        mask = (pairs.masks[chosen["candidate"]].to(self.device).bool() & brain[0, 0]).float().cpu()
        voxel_ml = float(np.prod(self.cfg.grid.voxel_size)) / 1000.0
        info = {
            "method": "paired sampling, closest generated brain",
            "seed": seed,
            "n_candidates": n_candidates,
            "chosen": chosen["candidate"],
            "qualified": len(qualified),
            "volume_ml": float(mask.sum()) * voxel_ml,
            "candidates": candidates,
        }
        return LesionProposal(mask=mask, brain=pairs.images[chosen["candidate"]], info=info)

    @torch.no_grad()
    def generate_from_mask(
        self, mask, n: int = 1, *, seed: int = 0, steps: int | None = None, ddim_eta: float | None = None
    ) -> GenerationResult:
        """The brain net alone from noise, conditioned on the encoded mask."""
        mask_t = self._volume(mask, "mask").gt(0.5).float()
        gen = make_generator(seed, self.device)
        timesteps = self.diffusion.generation_timesteps(steps or self.cfg.sampling.steps)
        condition = self.networks.encode(mask_t).expand(n, *self.cfg.latent_shape)
        y0, _ = self._reverse(timesteps, self._noise(n, gen), condition=condition, generator=gen, ddim_eta=ddim_eta)
        images = self._decode(y0)[:, 0].cpu()
        return GenerationResult(images=images, masks=mask_t[:, 0].expand(n, *self.cfg.grid.shape).cpu())

    @torch.no_grad()
    def heal(
        self,
        image,
        mask=None,
        *,
        mode: str | None = None,
        fill: str | None = None,
        fill_residual: bool | None = None,
        ae_passes: str | None = None,
        n_samples: int = 1,
        seed: int = 0,
        t_start: int | None = None,
        stride: int | None = None,
        alpha0: float | None = None,
        k: float | None = None,
        acg: bool | None = None,
        ddim_eta: float | None = None,
        composite: bool = True,
        spacing=None,
        band_mm=None,
        detect_t_start: int | None = None,
        detect_threshold: float | None = None,
        detect_min_ml: float | None = None,
        given=None,
    ) -> EditResult:
        """Pathology-to-healthy editing, in one of three modes (``SamplingConfig.heal_mode``):

        - ``mask`` (a lesion mask is known): the lesion is first filled classically (``fill``:
          a template graft, a white-matter fill, or nothing), the filled brain is noised to
          ``t_start`` and denoised with the empty-lesion condition; inside the (dilated) mask
          the guidance weight is 0 so the model regenerates the lesion, elsewhere ACG holds the
          input. Without the pre-fill a large dark lesion is treated as anatomy to keep.
        - ``detect`` (no mask): a free healing pass from ``detect_t_start`` gives the anomaly
          map; its thresholded, size-filtered part is the detected lesion, then healed as in
          ``mask`` mode. Nothing is detected in a healthy brain, which then comes back as it was.
        - ``acg``: the paper's mask-free healing (noise the input, denoise, ACG after each step).

        With ``fill_residual`` (mask and detect modes) the healed brain is the fill plus the
        model's change to it, ``decode(healed) - decode(filled)``: the autoencoder's blur cancels
        as it does for ``change``, and the fill's detail stays.

        ``given``: the lesion mask as the user gave it, when ``mask`` is that mask grown
        (usb_model.mask_growth): the ``auto`` fill reads a CSF-dark lesion's choice on it
        (``usb_model.fill.GIVEN_DARK_RATIO``).

        With ``composite`` the result is put back into the input: inside the lesion the decoded
        healed brain, in the blend band the input plus ``decode(healed) - decode(input)`` (so the
        autoencoder's error cancels), beyond the band the input's own voxels. In ``acg`` mode
        without a mask the region is where that decoded change exceeds ``detect_threshold``.
        """
        s = self.cfg.sampling
        image_t = self._volume(image, "image")
        mask_t = self._volume(mask, "mask").gt(0.5) if mask is not None else None
        if mask_t is not None and not bool(mask_t.any()):
            mask_t = None
        mode = mode or s.heal_mode
        if mode == "auto":
            mode = "mask" if mask_t is not None else "detect"
        if mode not in HEAL_MODES:
            raise ValueError(f"unknown heal mode {mode!r}; choose one of auto, {', '.join(HEAL_MODES)}")
        if mode == "mask" and mask_t is None:
            raise ValueError("heal mode 'mask' needs a non-empty lesion mask (use mode 'detect' without one)")
        ae_passes = ae_passes or self.ae_passes
        if ae_passes not in AE_PASSES:
            raise ValueError(f"unknown ae_passes {ae_passes!r}; choose one of {', '.join(AE_PASSES)}")
        params = {
            "mode": mode,
            "fill": fill or s.heal_fill,
            "fill_residual": bool(s.fill_residual if fill_residual is None else fill_residual),
            "ae_passes": ae_passes if mode == "mask" else "full",
            "t_start": t_start if t_start is not None else (s.t_start_heal if mode == "acg" else s.t_start_mask),
            "stride": stride or (s.edit_stride if mode == "acg" else s.mask_stride or s.edit_stride),
            "alpha0": s.alpha0 if alpha0 is None else alpha0,
            "k": s.k if k is None else k,
            "acg": s.acg if acg is None else acg,
            "ddim_eta": s.ddim_eta if ddim_eta is None else ddim_eta,
            "band_mm": tuple(band_mm or s.band_mm),
            "n_samples": n_samples,
            "seed": seed,
        }
        if mode == "detect":
            params.update(
                detect_t_start=detect_t_start if detect_t_start is not None else s.detect_t_start,
                detect_threshold=s.detect_threshold if detect_threshold is None else detect_threshold,
                detect_min_ml=s.detect_min_ml if detect_min_ml is None else detect_min_ml,
            )
        spacing = tuple(spacing or self.cfg.grid.voxel_size)
        image_np = image_t[0, 0].cpu().numpy()
        given = None if given is None else np.asarray(given) > 0
        if params["ae_passes"] == "edit":
            healed_samples, change_samples, fill_change, lesion_np = self._heal_in_box(
                image_t, image_np, mask_t, params, spacing, given
            )
            return self._heal_result(
                image_t,
                image_np,
                healed_samples,
                change_samples,
                fill_change,
                lesion_np,
                None,
                params,
                spacing,
                composite,
            )
        with self.costs.stage("encode input"):
            y_input = self._encode(image_t)
        with self.costs.stage("decode input"):
            reconstruction = self._decode(y_input)[0, 0].cpu().numpy()
        anomaly = None
        if mode == "detect":
            with self.costs.stage("detect"):
                free = (
                    self._decode(
                        self._heal_latents(y_input, None, params, t_start=params["detect_t_start"], acg=False)
                    )[:, 0]
                    .float()
                    .cpu()
                )
                anomaly = anomaly_map(
                    free.numpy(), reconstruction, brain_region(image_np), s.detect_sigma_vox, s.detect_polarity
                )
                found = detect_lesions(anomaly, params["detect_threshold"], params["detect_min_ml"], spacing)
            mask_t = torch.from_numpy(found).reshape(1, 1, *found.shape).to(self.device) if found.any() else None
            anomaly = torch.from_numpy(anomaly)
            if mask_t is None:  # nothing found: the input comes back untouched
                unchanged = image_t[0, 0].cpu()
                zero = torch.zeros_like(unchanged)
                return EditResult(
                    image=unchanged,
                    std=None,
                    samples=unchanged[None].expand(n_samples, *unchanged.shape),
                    region=zero if composite else None,
                    healed=unchanged,
                    change=zero,
                    lesion=zero,
                    anomaly=anomaly,
                    params=params,
                )
        filled = y_filled = None
        if mode == "acg":
            with self.costs.stage("sampling"):
                y_out = self._heal_latents(y_input, None, params)
        else:
            with self.costs.stage("fill"):
                filled = self._prefill(image_np, mask_t[0, 0].cpu().numpy(), params["fill"], spacing, given)
            with self.costs.stage("encode fill"):
                y_filled = self._encode(self._volume(filled, "filled image"))
            with self.costs.stage("sampling"):
                y_out = self._heal_latents(y_filled, mask_t, params)
        with self.costs.stage("decode samples"):
            samples = self._decode(y_out)[:, 0].float().cpu()
        fill_decoded = None
        if mode != "acg" and params["fill_residual"]:
            with self.costs.stage("decode fill"):
                fill_decoded = self._decode(y_filled)[0, 0].cpu()
        lesion_np = mask_t[0, 0].cpu().numpy() if mask_t is not None else None
        with self.costs.stage("outputs"):
            healed_samples, change_samples, fill_change = self._heal_outputs(
                samples, reconstruction, image_np, lesion_np, filled, fill_decoded, params, spacing
            )
        return self._heal_result(
            image_t,
            image_np,
            healed_samples,
            change_samples,
            fill_change,
            lesion_np,
            anomaly,
            params,
            spacing,
            composite,
        )

    def _heal_outputs(
        self, samples, reconstruction, image_np, lesion_np, filled, fill_decoded, params, spacing, line=None
    ):
        """Decoded samples -> (healed samples, changes, the model's change to the fill or None),
        on whatever part of the grid the arrays cover (all of it, or the edit path's box)."""
        change_samples = samples - torch.from_numpy(reconstruction)
        healed_samples = self._match_intensity(samples, reconstruction, image_np, lesion_np, spacing, line)
        fill_change = None
        if fill_decoded is not None:
            # decode(filled) carries the same decoder blur as decode(healed): their difference is
            # the model's edit alone, laid onto the fill instead of the blurred decode.
            matched = self._match_intensity(fill_decoded[None], reconstruction, image_np, lesion_np, spacing, line)[0]
            corrections = healed_samples - matched
            fill_np = np.asarray(filled, np.float32)
            # Bounded by the fill's local range here as on the native grid (bids_usb.native),
            # where the unbounded change goes and is bounded by the finer fill.
            bounded = within_local_range(fill_np[None] + corrections.numpy(), fill_np, lesion_np)
            healed_samples = torch.from_numpy(bounded.astype(np.float32)).clamp(0, 1)
            fill_change = corrections.mean(dim=0)
        return healed_samples, change_samples, fill_change

    def _prefill(self, image_np, lesion_np, kind, spacing, given=None):
        """The classical fill of the lesion (``usb_model.fill.prefill``), its per-lesion choice read
        on the mask as given where ``heal`` has one (``given``)."""
        return prefill(
            image_np,
            lesion_np,
            kind,
            template=self.template_t1w,
            spacing=spacing,
            given=given,
            given_dark=GIVEN_DARK_RATIO if given is not None else None,
        )

    def _heal_in_box(self, image_t, image_np, mask_t, params, spacing, given=None):
        """Mask-mode healing with the autoencoder's passes limited to what the output takes.

        - the input is encoded once, over the whole grid (the denoisers see the whole latent);
        - the filled image differs from the input only inside the lesion: its latent is the
          input's plus ``encode(filled) - encode(input)`` over the lesion's box grown by the
          encoder's reach (the two cropped passes share their crop's statistics and faces, which
          cancel in the difference);
        - input, samples and fill are decoded over the edit region's box only (the lesion grown
          by the blend band and two voxels for the resampling to the native grid, then by the
          decoder's reach); outside it the outputs are the input (no change).
        """
        shape = tuple(self.cfg.grid.shape)
        factor = self.cfg.autoencoder.downsample_factor
        margin = self.ae_margin * factor
        max_voxels = self._max_pass_voxels()
        lesion_np = mask_t[0, 0].cpu().numpy()
        lesion_box = Box.around(lesion_np)
        band = int(np.ceil(params["band_mm"][1] / min(spacing))) + 2
        out_box = lesion_box.grow(band, shape).snap(factor, shape)
        ae = self.networks.autoencoder
        enc_stats, dec_stats = GroupNormStatistics(), GroupNormStatistics()
        with self.costs.stage("encode input"), enc_stats.record(ae):
            y_input = self._encode(image_t)
        with self.costs.stage("fill"):
            filled = self._prefill(image_np, lesion_np, params["fill"], spacing, given)
        with self.costs.stage("encode fill"), enc_stats.frozen(ae):
            filled_t = self._volume(filled, "filled image")
            enc_box = lesion_box.grow(margin, shape).snap(factor, shape)
            pair = encode_box(
                self._encode_raw,
                torch.cat([filled_t, image_t]),
                enc_box,
                factor=factor,
                margin=margin,
                max_voxels=max(max_voxels // 2, 16**3),
                shape=shape,
                costs=self.costs,
            )
            y_filled = y_input.clone()
            y_filled[(..., *enc_box.latent(factor))] += pair[:1] - pair[1:]
        with self.costs.stage("sampling"):
            y_out = self._heal_latents(y_filled, mask_t, params)
        # The whole-grid decode only gives the boxes their GroupNorm statistics and the intensity
        # line its fit, so it may run in bf16 where that is native (statistics_autocast); the
        # voxels the outputs take are all decoded in float32 over the box below.
        with self.costs.stage("decode input"), dec_stats.record(ae), statistics_autocast(self.device):
            reconstruction = self._decode(y_input)[0, 0].cpu().numpy()
        line = self._intensity_line(reconstruction, image_np, lesion_np, spacing)

        def decode(latent):
            with dec_stats.frozen(ae):
                return (
                    decode_box(
                        self._decode,
                        latent,
                        out_box,
                        factor=factor,
                        margin=margin,
                        max_voxels=max_voxels,
                        shape=shape,
                        costs=self.costs,
                    )[:, 0]
                    .float()
                    .cpu()
                )

        with self.costs.stage("decode samples"):
            # The input's box beside the samples': the change is the difference of two passes
            # over the same box, its faces and statistics alike.
            decoded = decode(torch.cat([y_out, y_input]))
            samples, reconstruction_box = decoded[:-1], decoded[-1].numpy()
        fill_decoded = None
        if params["fill_residual"]:
            with self.costs.stage("decode fill"):
                fill_decoded = decode(y_filled)[0]
        box = out_box.slices
        with self.costs.stage("outputs"):
            healed_b, change_b, fill_change_b = self._heal_outputs(
                samples,
                reconstruction_box,
                image_np[box],
                lesion_np[box],
                np.asarray(filled)[box],
                fill_decoded,
                params,
                spacing,
                line,
            )
            n = samples.shape[0]
            healed_samples = torch.from_numpy(np.asarray(filled, np.float32)).expand(n, *shape).clone()
            healed_samples[(slice(None), *box)] = healed_b
            change_samples = torch.zeros((n, *shape))
            change_samples[(slice(None), *box)] = change_b
            fill_change = None
            if fill_change_b is not None:
                fill_change = torch.zeros(shape)
                fill_change[box] = fill_change_b
        return healed_samples, change_samples, fill_change, lesion_np

    def _heal_result(
        self,
        image_t,
        image_np,
        healed_samples,
        change_samples,
        fill_change,
        lesion_np,
        anomaly,
        params,
        spacing,
        composite,
    ) -> EditResult:
        s = self.cfg.sampling
        n_samples = params["n_samples"]
        healed = healed_samples.mean(dim=0)
        change = change_samples.mean(dim=0)
        std = healed_samples.std(dim=0, unbiased=True) if n_samples > 1 else None
        lesion = torch.from_numpy(lesion_np.astype(np.float32)) if lesion_np is not None else None
        result = EditResult(
            image=healed,
            std=std,
            samples=healed_samples,
            region=None,
            healed=healed,
            change=change,
            lesion=lesion,
            anomaly=anomaly,
            params=params,
            fill_change=fill_change,
        )
        if composite:
            seed_region = lesion_np if lesion_np is not None else (change.abs().numpy() > s.detect_threshold)
            if seed_region.any():
                inner, outer = params["band_mm"]
                weight = blend_weight(seed_region, spacing, inner_mm=inner, outer_mm=outer)
                lesion_core = lesion_np if lesion_np is not None else np.zeros_like(seed_region)
                comp = [
                    torch.from_numpy(heal_composite(image_np, h.numpy(), c.numpy(), lesion_core, weight))
                    for h, c in zip(healed_samples, change_samples)
                ]
                result.samples = torch.stack(comp)
                result.image = torch.from_numpy(
                    heal_composite(image_np, healed.numpy(), change.numpy(), lesion_core, weight)
                )
                result.region = torch.from_numpy(weight)
                result.std = std * result.region if std is not None else None
            else:
                result.image = image_t[0, 0].cpu()
                result.samples = result.image[None].expand(n_samples, *result.image.shape)
                result.region = torch.zeros_like(result.image)
                result.std = None
        return result

    def _heal_latents(
        self,
        y_start: torch.Tensor,
        mask_t: torch.Tensor | None,
        params: dict,
        *,
        t_start: int | None = None,
        acg: bool | None = None,
    ) -> torch.Tensor:
        """The clean latents (n, C, *latent grid) of one healing pass from the clean latent ``y_start``.

        ACG pulls towards ``y_start``; with ``mask_t`` the guidance weight is multiplied by
        ``1 - coverage`` of the mask grown by one latent voxel, so the lesion is free.
        """
        n = params["n_samples"]
        t_start = params["t_start"] if t_start is None else t_start
        use_acg = params["acg"] if acg is None else acg
        guidance = None
        if use_acg or mask_t is not None:
            guidance = _Guidance(y0=y_start, t_norm=float(t_start), alpha0=params["alpha0"], k=params["k"], acg=use_acg)
            if mask_t is not None:
                free = soft_lesion_map(mask_t.float(), self.cfg.latent_shape, self.cfg.sampling.lcg_pool)
                guidance.lesion_weight = lcg_weight((free > 0).float(), 1.0)
        gen = make_generator(params["seed"], self.device)
        timesteps = self.diffusion.edit_timesteps(t_start, params["stride"])
        y0_n = y_start.expand(n, *self.cfg.latent_shape)
        y_t = self.diffusion.add_noise(y0_n, self._noise(n, gen), t_start)
        condition = self.networks.empty_condition(n, self.device)
        y_out, _ = self._reverse(
            timesteps, y_t, condition=condition, guidance=guidance, generator=gen, ddim_eta=params["ddim_eta"]
        )
        return y_out

    def _match_intensity(
        self,
        samples: torch.Tensor,
        reconstruction: np.ndarray,
        image: np.ndarray,
        lesion: np.ndarray | None,
        spacing,
        line: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Decoded samples mapped onto the input's intensities by the line that maps the
        decoded input onto the input over the brain away from the lesion: the decoder's global
        intensity bias does not enter the fill. ``line``: that line, fitted beforehand (the edit
        path fits it on the whole grid and applies it to its box)."""
        slope, intercept = line if line is not None else self._intensity_line(reconstruction, image, lesion, spacing)
        brain = torch.from_numpy(brain_region(reconstruction) | brain_region(image))
        return torch.where(brain, (samples * slope + intercept).clamp(0, 1), samples)

    def _intensity_line(self, reconstruction, image, lesion, spacing) -> tuple[float, float]:
        fit = brain_region(image)
        if lesion is not None:
            fit = fit & (blend_weight(lesion, spacing, 0.0, 2.0 * max(spacing)) == 0)
        return intensity_line(reconstruction, image, fit)

    @torch.no_grad()
    def embed(
        self,
        image,
        mask,
        *,
        n_samples: int = 1,
        seed: int = 0,
        t_start: int | None = None,
        stride: int | None = None,
        alpha0: float | None = None,
        k: float | None = None,
        lcg_eta: float | None = None,
        acg: bool | None = None,
        lcg: bool | None = None,
        ddim_eta: float | None = None,
        composite: bool = True,
        spacing=None,
    ) -> EditResult:
        """Healthy-to-pathology: noise the healthy input to t_start, denoise conditioned on the
        target mask's latent, and guide with ACG x LCG so that only the lesion's voxels are free."""
        s = self.cfg.sampling
        mask_t = self._volume(mask, "mask").gt(0.5).float()
        if not bool(mask_t.any()):
            raise ValueError("embed needs a non-empty lesion mask")
        t_start = t_start if t_start is not None else s.t_start_embed
        y0 = self.networks.encode(self._volume(image, "image"))
        condition = self.networks.encode(mask_t).expand(n_samples, *self.cfg.latent_shape)
        use_acg = s.acg if acg is None else acg
        use_lcg = s.lcg if lcg is None else lcg
        guidance = self._guidance(y0, t_start, alpha0, k, use_acg) if (use_acg or use_lcg) else None
        if use_lcg:
            x_lesion = soft_lesion_map(mask_t, self.cfg.latent_shape, s.lcg_pool)
            guidance.lesion_weight = lcg_weight(x_lesion, s.lcg_eta if lcg_eta is None else lcg_eta)
        return self._edit(
            image, mask_t, y0, condition, guidance, n_samples, seed, t_start, stride, ddim_eta, composite, spacing
        )

    # --- the shared loop ----------------------------------------------------------------------

    def _reverse(
        self,
        timesteps: list[int],
        y_t: torch.Tensor,
        *,
        x_t: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        guidance: _Guidance | None = None,
        generator: torch.Generator | None = None,
        ddim_eta: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Walk ``timesteps`` down to the clean end.

        With ``x_t`` the lesion latent evolves too (paired process) and its one-step estimate
        is the brain net's condition; otherwise ``condition`` is fixed. Guidance, when given,
        is applied to y after every step.
        """
        eta = self.cfg.sampling.ddim_eta if ddim_eta is None else ddim_eta
        clip = self.cfg.training.condition_clip
        report = max(1, len(timesteps) // 10)  # progress about every tenth of the walk
        started = time.perf_counter()
        for i, (t, t_prev) in enumerate(zip(timesteps, [*timesteps[1:], -1])):
            if i and i % report == 0:
                log.info("sampling step %d/%d (t = %d, %.1f s)", i, len(timesteps), t, time.perf_counter() - started)
            if x_t is not None:
                eps_x = self._eps(self.networks.lesion, x_t, y_t, t)
                condition = self.diffusion.brain_condition(x_t, eps_x, t, clip)
                x_t, _ = self.diffusion.ddim_step(x_t, eps_x, t, t_prev, eta, generator)
            eps_y = self._eps(self.networks.brain, y_t, condition, t)
            y_t, y0_hat = self.diffusion.ddim_step(y_t, eps_y, t, t_prev, eta, generator)
            if guidance is not None:
                y_t = apply_guidance(y_t, guidance.y0, guidance.weight(y0_hat, t))
        return y_t, x_t

    def _edit(
        self, image, mask, y0, condition, guidance, n_samples, seed, t_start, stride, ddim_eta, composite, spacing
    ) -> EditResult:
        gen = make_generator(seed, self.device)
        timesteps = self.diffusion.edit_timesteps(t_start, stride or self.cfg.sampling.edit_stride)
        y0_n = y0.expand(n_samples, *self.cfg.latent_shape)
        y_t = self.diffusion.add_noise(y0_n, self._noise(n_samples, gen), t_start)
        y_out, _ = self._reverse(
            timesteps, y_t, condition=condition, guidance=guidance, generator=gen, ddim_eta=ddim_eta
        )
        samples = self._decode(y_out)[:, 0].float().cpu()
        mean = samples.mean(dim=0)
        std = samples.std(dim=0, unbiased=True) if n_samples > 1 else None
        region = None
        if composite and mask is not None:
            mask_np = self._volume(mask, "mask")[0, 0].cpu().numpy() > 0.5
            if mask_np.any():
                original = self._volume(image, "image")[0, 0].cpu().numpy()
                inner, outer = self.cfg.sampling.band_mm
                weight = blend_weight(mask_np, spacing or self.cfg.grid.voxel_size, inner_mm=inner, outer_mm=outer)
                region = torch.from_numpy(weight)
                mean = torch.from_numpy(blend(original, mean.numpy(), weight))
                samples = torch.stack([torch.from_numpy(blend(original, x.numpy(), weight)) for x in samples])
                std = std * region if std is not None else None
        return EditResult(image=mean, std=std, samples=samples, region=region)

    # --- helpers ------------------------------------------------------------------------------

    def _guidance(self, y0, t_start, alpha0, k, acg) -> _Guidance:
        s = self.cfg.sampling
        return _Guidance(
            y0=y0,
            t_norm=float(t_start),
            alpha0=s.alpha0 if alpha0 is None else alpha0,
            k=s.k if k is None else k,
            acg=acg,
        )

    def _eps(self, net, z_t: torch.Tensor, condition: torch.Tensor, t: int) -> torch.Tensor:
        timesteps = torch.full((z_t.shape[0],), t, device=self.device, dtype=torch.long)
        with autocast(self.device):
            output = net(torch.cat([z_t, condition], dim=1), timesteps)
        return self.diffusion.to_eps(output.float(), z_t, t)

    def _noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((n, *self.cfg.latent_shape), generator=generator, device=self.device)

    def _max_pass_voxels(self) -> int:
        """The most image voxels one plain autoencoder pass may cover within the memory budget."""
        budget = memory_budget_gb(self.mem_gb)
        weights_gb = sum(p.numel() * p.element_size() for p in self.networks.parameters()) / 2**30
        return max_pass_voxels(self.cfg.autoencoder.channels[0], budget, weights_gb)

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        whole = latent.shape[-3:] == tuple(self.cfg.latent_shape[-3:])
        # A whole-grid decode that does not fit the budget runs one block at a time
        # (usb_model.lean): the same result, 37 % less peak memory at the paper's 160^3.
        lean = whole and self.device.type == "cpu" and math.prod(self.cfg.grid.shape) > self._max_pass_voxels()
        with autocast(self.device):
            volume = self.networks.decode(latent, lean=lean)
        if whole:  # a box records its own pass
            self.costs.ae_pass("decode", volume.shape[-3:], latent.shape[0], region="full, lean" if lean else "full")
        return volume.float().clamp(0, 1)

    def _encode_raw(self, volume: torch.Tensor) -> torch.Tensor:
        return self.networks.encode(volume)

    def _encode(self, volume: torch.Tensor) -> torch.Tensor:
        """``networks.encode`` over the whole grid, recorded as one pass."""
        self.costs.ae_pass("encode", volume.shape[-3:], volume.shape[0])
        return self.networks.encode(volume)

    def _volume(self, array, what: str) -> torch.Tensor:
        """A (grid) or (1, grid) or (1, 1, grid) array -> (1, 1, grid) float32 on the device."""
        tensor = torch.as_tensor(np.asarray(array) if not torch.is_tensor(array) else array).float()
        grid = tuple(self.cfg.grid.shape)
        squeezed = tensor.reshape(tensor.shape[-3:]) if tensor.dim() > 3 and tensor.numel() == np.prod(grid) else tensor
        if tuple(squeezed.shape) != grid:
            raise ValueError(f"{what} has shape {tuple(tensor.shape)}; the model grid is {grid}")
        if not torch.isfinite(squeezed).all():
            raise ValueError(f"{what} contains NaN or Inf voxels")
        return squeezed.reshape(1, 1, *grid).to(self.device)
