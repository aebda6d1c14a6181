import pytest
import torch

from usb_model.config import ScheduleConfig
from usb_model.diffusion import Diffusion, sample_timesteps, stride_for_steps


@pytest.fixture(scope="module")
def diffusion():
    return Diffusion(ScheduleConfig())


def test_schedule_is_linear_beta(diffusion):
    betas = 1 - diffusion.alphas_cumprod[1:] / diffusion.alphas_cumprod[:-1]
    assert betas[0].item() == pytest.approx(1e-4 + (2e-2 - 1e-4) / 1023, rel=1e-3)
    assert betas[-1].item() == pytest.approx(2e-2, rel=1e-3)
    assert diffusion.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4, rel=1e-6)


def test_one_step_estimate_inverts_forward_noising(diffusion):
    z0 = torch.randn(2, 3, 4, 4, 4)
    eps = torch.randn_like(z0)
    for t in (0, 300, 1023):
        z_t = diffusion.add_noise(z0, eps, t)
        assert torch.allclose(diffusion.predict_x0(z_t, eps, t), z0, atol=1e-3)


def test_ddim_step_with_true_noise_stays_on_the_forward_path(diffusion):
    # With the exact noise, a deterministic DDIM step from t lands where forward noising to t_prev would.
    z0 = torch.randn(1, 3, 4, 4, 4)
    eps = torch.randn_like(z0)
    z_t = diffusion.add_noise(z0, eps, 500)
    z_prev, z0_hat = diffusion.ddim_step(z_t, eps, 500, 377)
    assert torch.allclose(z0_hat, z0, atol=1e-4)
    assert torch.allclose(z_prev, diffusion.add_noise(z0, eps, 377), atol=1e-4)
    z_clean, _ = diffusion.ddim_step(z_t, eps, 500, -1)
    assert torch.allclose(z_clean, z0, atol=1e-4)


def test_ddim_eta_adds_seeded_noise(diffusion):
    z_t = torch.randn(1, 3, 4, 4, 4)
    eps = torch.randn_like(z_t)
    a, _ = diffusion.ddim_step(z_t, eps, 400, 300, ddim_eta=1.0, generator=torch.Generator().manual_seed(1))
    b, _ = diffusion.ddim_step(z_t, eps, 400, 300, ddim_eta=1.0, generator=torch.Generator().manual_seed(1))
    c, _ = diffusion.ddim_step(z_t, eps, 400, 300, ddim_eta=0.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_timestep_sequences(diffusion):
    assert diffusion.edit_timesteps(300) == list(range(300, -1, -1))
    assert diffusion.edit_timesteps(300, 100) == [300, 200, 100, 0]
    gen = diffusion.generation_timesteps(300)
    assert len(gen) == 342 and gen[0] == 1023 and gen[-1] == 0  # upstream's stride of 3
    with pytest.raises(ValueError):
        diffusion.edit_timesteps(1024)


@pytest.mark.parametrize(
    ("t_start", "steps", "calls"), [(100, 34, 34), (200, 67, 67), (300, 100, 101), (200, 20, 21), (50, 300, 51)]
)
def test_steps_request_costs_about_that_many_calls(diffusion, t_start, steps, calls):
    """--steps N: N or N + 1 denoiser calls (flooring the stride gave 51 calls for 34 asked at t_start 100)."""
    assert len(diffusion.edit_timesteps(t_start, stride_for_steps(t_start, steps))) == calls


def test_antithetic_timesteps_pair_up():
    t = sample_timesteps(8, 1024, torch.Generator().manual_seed(0))
    assert torch.equal(t[:4] + t[4:], torch.full((4,), 1023))


def test_timestep_focus_spends_its_share_below_focus_max():
    """focus 0.75 below 512 of T 1024: 0.75 + 0.25 / 2 of the draws land below 512, every draw
    stays in [0, T), and antithetic partners mirror within their own range."""
    g = torch.Generator().manual_seed(0)
    t = torch.cat([sample_timesteps(4, 1024, g, True, 0.75, 512) for _ in range(4000)])
    assert int(t.min()) >= 0 and int(t.max()) <= 1023
    below = (t < 512).float().mean().item()
    assert abs(below - 0.875) < 0.01
    pairs = sample_timesteps(4000, 1024, g, True, 0.5, 512).view(2, -1).sum(0)
    assert set(pairs.unique().tolist()) == {511, 1023}


def test_timestep_focus_off_draws_what_it_always_drew():
    """focus 0 keeps the uniform draws bit for bit, so resumed runs see the same timesteps."""
    a = sample_timesteps(6, 1024, torch.Generator().manual_seed(3), True, 0.0, 512)
    b = sample_timesteps(6, 1024, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        sample_timesteps(4, 1024, None, True, 0.5, 2048)


@pytest.mark.parametrize("steps", [4, 16, 64])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_is_monais_where_monai_applies(steps, eta):
    """Pinned to MONAI: with a step count that divides T (MONAI's stride T // steps) and no
    clipping, ``Diffusion.ddim_step`` from t to t - T // steps is MONAI's ``DDIMScheduler.step``,
    noise included (the same generator seed draws the same noise)."""
    from monai.networks.schedulers import DDIMScheduler

    from usb_model.config import ScheduleConfig
    from usb_model.diffusion import Diffusion

    cfg = ScheduleConfig()
    diffusion = Diffusion(cfg)
    monai = DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        schedule=cfg.schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        clip_sample=False,
    )
    monai.set_timesteps(steps)
    stride = cfg.num_train_timesteps // steps
    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, 5, 5)
    eps = torch.randn_like(z)
    for t in (int(monai.timesteps[0]), int(monai.timesteps[len(monai.timesteps) // 2]), int(monai.timesteps[-1])):
        ours, ours_x0 = diffusion.ddim_step(
            z, eps, t, t - stride, ddim_eta=eta, generator=torch.Generator().manual_seed(3)
        )
        theirs, theirs_x0 = monai.step(eps, t, z, eta=eta, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ours_x0, theirs_x0.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)
