"""Diffusion arithmetic: the noise schedule, forward noising, the one-step clean estimate and
a DDIM step between any two timesteps.

The betas come from MONAI's scheduler (so the schedule is the one MONAI users know). The
DDIM update is written out here because MONAI's ``DDIMScheduler.step`` derives the previous
timestep from a fixed stride (``T // num_inference_steps``), which is wrong for a sequence
that does not start at T - 1 (editing starts at ``t_start``) and for step counts that do not
divide T. Here the caller names both timesteps.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDPMScheduler

from .config import ScheduleConfig


def stride_for_steps(t_start: int, steps: int) -> int:
    """The edit stride that walks from ``t_start`` to 0 in about ``steps`` denoiser calls.

    Rounded up, so a request of N steps costs N (or N + 1, when the walk lands on 0) calls,
    never the ~1.5 N that flooring gives (t_start 100 in 34 steps: stride 3, 34 calls; floored,
    stride 2 and 51 calls)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    return max(1, -(-int(t_start) // int(steps)))


PREDICTION_TYPES = ("epsilon", "v_prediction")


class Diffusion:
    """The forward process q(z_t | z_0) and the deterministic (or eta-noisy) DDIM reverse step.

    Everything downstream of a denoiser (DDIM, ACG/LCG, the lesion net's condition, the fill
    change) works on the noise estimate eps; ``to_eps`` turns a network's output of the
    schedule's ``prediction_type`` into it, so guidance code never branches on the type.
    """

    def __init__(self, schedule: ScheduleConfig):
        if schedule.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {schedule.prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}"
            )
        self.prediction_type = schedule.prediction_type
        scheduler = DDPMScheduler(
            num_train_timesteps=schedule.num_train_timesteps,
            schedule=schedule.schedule,
            beta_start=schedule.beta_start,
            beta_end=schedule.beta_end,
            prediction_type=schedule.prediction_type,
        )
        self._scheduler = scheduler
        self.num_train_timesteps = schedule.num_train_timesteps
        # float64 for the products, float32 for use: abar_t spans 1 .. ~4e-5 at T = 1024.
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64).float()
        self._tables: dict[str, torch.Tensor] = {}

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        return self.num_train_timesteps

    def abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """abar_t broadcast against ``like`` (batch first); t = -1 means the clean end (abar = 1)."""
        table = self._table(like.device)
        if isinstance(t, int):  # the sampling loop: no host-device transfer per step
            a = table[t]
        else:
            a = table[torch.as_tensor(t, device=like.device).long().reshape(-1)]
        return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def _table(self, device: torch.device) -> torch.Tensor:
        """abar_0..abar_{T-1} then 1.0 (so index -1 is the clean end), cached per device."""
        key = str(device)
        if key not in self._tables:
            self._tables[key] = torch.cat([self.alphas_cumprod, torch.ones(1)]).to(device)
        return self._tables[key]

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (paper eq. 4-5)."""
        a = self.abar(t, z0)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to output for z_t = add_noise(z0, noise, t): eps itself, or
        MONAI's velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0."""
        if self.prediction_type == "epsilon":
            return noise
        return self._scheduler.get_velocity(z0, noise, torch.as_tensor(t).long())

    def to_eps(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The noise estimate from a denoiser's output: eps = sqrt(abar_t) v + sqrt(1 - abar_t) z_t."""
        if self.prediction_type == "epsilon":
            return output
        a = self.abar(t, z_t)
        return a.sqrt() * output + (1 - a).sqrt() * z_t

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR_t = abar_t / (1 - abar_t), one value per timestep."""
        a = self._table(t.device)[t.long()]
        return a / (1 - a)

    def loss_weight(self, t: torch.Tensor, min_snr_gamma: float) -> torch.Tensor | None:
        """Min-SNR-gamma weights per sample (Hang et al. 2023), or None for the plain loss.

        The plain eps loss equals SNR_t times the x0 loss, the v loss (SNR_t + 1) times it;
        dividing min(SNR_t, gamma) by those factors gives both the same clamped x0 weighting."""
        if not min_snr_gamma:
            return None
        snr = self.snr(t)
        denominator = snr if self.prediction_type == "epsilon" else snr + 1
        return snr.clamp(max=float(min_snr_gamma)) / denominator

    def predict_x0(self, z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The one-step clean estimate z0_hat = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)."""
        a = self.abar(t, z_t)
        return (z_t - (1 - a).sqrt() * eps) / a.sqrt()

    def brain_condition(
        self, x_t: torch.Tensor, eps_x: torch.Tensor, t: torch.Tensor | int, clip: float = 0.0
    ) -> torch.Tensor:
        """The brain net's condition in the paired process: the lesion net's one-step clean
        estimate x0_hat, clamped to +-``clip`` when set (``TrainingConfig.condition_clip``).
        Training (``train.losses.brain_inputs``) and sampling (``tasks.USB._reverse``) both call
        this, so the brain net sees at sampling time what it learnt on."""
        x0_hat = self.predict_x0(x_t, eps_x, t)
        return x0_hat.clamp(-clip, clip) if clip else x0_hat

    def ddim_step(
        self,
        z_t: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        ddim_eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update from t to t_prev < t (Song et al. 2021, eq. 12); returns (z_prev, z0_hat).
        Any t_prev < 0 is the clean end (abar = 1), as in MONAI's scheduler."""
        t_prev = max(int(t_prev), -1)
        z0_hat = self.predict_x0(z_t, eps, t)
        a_t = self.abar(t, z_t)
        a_prev = self.abar(t_prev, z_t)
        sigma = ddim_eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        z_prev = a_prev.sqrt() * z0_hat + direction
        if ddim_eta > 0:
            noise = torch.randn(z_t.shape, generator=generator, device=z_t.device, dtype=z_t.dtype)
            z_prev = z_prev + sigma * noise
        return z_prev, z0_hat

    def edit_timesteps(self, t_start: int, stride: int = 1) -> list[int]:
        """t_start, t_start - stride, ..., down to >= 0: the reverse path of an edit."""
        if not 0 < t_start < self.T:
            raise ValueError(f"t_start must lie in (0, {self.T}); got {t_start}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1; got {stride}")
        return list(range(t_start, -1, -stride))

    def generation_timesteps(self, steps: int) -> list[int]:
        """A uniform sub-sequence for sampling from pure noise: stride T // steps, as upstream
        (300 requested steps at T = 1024 is a stride of 3, so 342 network calls)."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must lie in [1, {self.T}]; got {steps}")
        stride = self.T // steps
        return list(range(0, self.T, stride))[::-1]


def sample_timesteps(
    batch: int,
    T: int,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
    focus: float = 0.0,
    focus_max: int | None = None,
) -> torch.Tensor:
    """Training timesteps; antithetic pairs (t, T - 1 - t) halve the variance of the loss estimate.

    With ``focus`` > 0 that share of the draws (a pair counts once) is uniform below
    ``focus_max`` instead of below T, and its antithetic partner mirrors within that range.
    """
    if not 0.0 <= focus <= 1.0:
        raise ValueError(f"timestep focus must lie in [0, 1], got {focus}")
    if focus == 0:  # the uniform draws, as every run before the focus option drew them
        if not antithetic:
            return torch.randint(0, T, (batch,), generator=generator)
        half = torch.randint(0, T, ((batch + 1) // 2,), generator=generator)
        return torch.cat([half, T - 1 - half])[:batch]
    if focus_max is None or not 0 < focus_max <= T:
        raise ValueError(f"timestep focus_max must lie in (0, {T}], got {focus_max}")
    draws = (batch + 1) // 2 if antithetic else batch
    focused = torch.rand(draws, generator=generator) < focus
    top = torch.where(focused, focus_max, T)
    t = torch.minimum((torch.rand(draws, generator=generator) * top).long(), top - 1)
    if not antithetic:
        return t
    return torch.cat([t, top - 1 - t])[:batch]
