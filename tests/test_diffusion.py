import numpy as np
import pytest
import torch

from skipdit.diffusion import GaussianDiffusion, classifier_free_guidance, ddim_sample, ddpm_sample
from skipdit.diffusion.gaussian import normal_kl
from skipdit.diffusion.samplers import SeededNoise, sample
from skipdit.diffusion.schedule import make_betas, respace_betas, space_timesteps


def test_respacing_matches_adm():
    ts = space_timesteps(1000, "250")
    assert len(ts) == 250
    assert ts[:6] == [0, 4, 8, 12, 16, 20] and ts[-3:] == [991, 995, 999]  # round(k * 999 / 249)
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    fifty = space_timesteps(1000, "50")
    assert fifty[-3:] == [958, 979, 999] and fifty[:3] == [0, 20, 41]
    # sections: 1000 split into 3 parts of 334, 333, 333; 2 steps in the first, 1, then 3
    assert space_timesteps(1000, "2,1,3") == [0, 333, 334, 667, 833, 999]
    assert space_timesteps(1000, "leading100+1") == list(range(1, 1000, 10))
    assert space_timesteps(1000, "1000") == list(range(1000))


@pytest.mark.parametrize("spec", ["0", "abc", "ddim0", "ddim999", "1001", "leading100+10"])
def test_bad_respacing(spec):
    with pytest.raises(ValueError):
        space_timesteps(1000, spec)


def test_respaced_chain_keeps_alphas_cumprod():
    betas = make_betas("linear")
    keep = space_timesteps(1000, "ddim50")
    new = respace_betas(betas, keep)
    np.testing.assert_allclose(np.cumprod(1 - new), np.cumprod(1 - betas)[keep], rtol=1e-12)


def test_betas():
    lin = make_betas("linear")
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    cos = make_betas("cosine")
    assert cos.max() <= 0.999 and (np.diff(cos) >= 0).all()
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic")


def test_eps_x0_round_trip_and_q_sample():
    d = GaussianDiffusion.create("250")
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    i = torch.tensor([0, 100, 249])
    xt = d.q_sample(x0, i, eps)
    torch.testing.assert_close(d.x0_from_eps(xt, i, eps), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d.eps_from_x0(xt, i, x0), eps, atol=1e-4, rtol=1e-4)
    abar = np.cumprod(1 - make_betas("linear"))[999]  # index 249 of "250" is t = 999
    torch.testing.assert_close(xt[2], (np.sqrt(abar) * x0[2] + np.sqrt(1 - abar) * eps[2]).float())


def test_posterior_mean_by_hand():
    d = GaussianDiffusion(make_betas("linear", 100))
    b = make_betas("linear", 100)
    acp = np.cumprod(1 - b)
    x0, xt, k = torch.ones(1, 1, 1, 1), 2 * torch.ones(1, 1, 1, 1), 5
    mean, var, _ = d.q_posterior(x0, xt, torch.tensor([k]))
    coef0 = b[k] * np.sqrt(acp[k - 1]) / (1 - acp[k])
    coeft = (1 - acp[k - 1]) * np.sqrt(1 - b[k]) / (1 - acp[k])
    assert mean.item() == pytest.approx(coef0 + 2 * coeft, rel=1e-6)
    assert var.item() == pytest.approx(b[k] * (1 - acp[k - 1]) / (1 - acp[k]), rel=1e-6)


def test_learned_range_variance_endpoints():
    d = GaussianDiffusion.create("250")
    xt, i = torch.zeros(1, 2, 2, 2), torch.tensor([100])
    out = lambda v: torch.cat([torch.zeros_like(xt), torch.full_like(xt, v)], dim=1)  # noqa: E731
    _, log_var_hi, _ = d.p_mean_variance(out(1.0), xt, i)
    _, log_var_lo, _ = d.p_mean_variance(out(-1.0), xt, i)
    assert log_var_hi.flatten()[0].item() == pytest.approx(np.log(d._np["betas"][100]), rel=1e-5)
    assert log_var_lo.flatten()[0].item() == pytest.approx(d._np["post_log_var"][100], rel=1e-5)
    with pytest.raises(ValueError, match="must output 4 channels"):
        d.p_mean_variance(torch.zeros(1, 2, 2, 2), xt, i)


def _oracle(x0: torch.Tensor, d: GaussianDiffusion, learn_sigma: bool):
    """A model that knows x0: it returns the exact eps for any x_t (plus v = 0 for the variance)."""
    def model_fn(xt, t):
        i = torch.tensor([d.timestep_map.index(int(v)) for v in t])
        eps = d.eps_from_x0(xt, i, x0.expand_as(xt))
        return torch.cat([eps, torch.zeros_like(eps)], 1) if learn_sigma else eps
    return model_fn


def test_ddim_eta0_is_deterministic_and_recovers_x0():
    d = GaussianDiffusion.create("ddim50")
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    x_T = torch.randn(2, 3, 4, 4)

    def no_noise(_):
        raise AssertionError("eta=0 must not draw noise")

    a = ddim_sample(_oracle(x0, d, True), x_T, d, eta=0.0, noise=no_noise)
    b = ddim_sample(_oracle(x0, d, True), x_T.clone(), d, eta=0.0, noise=no_noise)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, x0, atol=1e-4, rtol=1e-4)


def test_ddpm_with_oracle_lands_on_x0_and_calls_back():
    d = GaussianDiffusion.create("50", learn_sigma=False)
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    seen = []
    out = ddpm_sample(_oracle(x0, d, False), torch.randn(2, 1, 4, 4), d, noise=SeededNoise([0, 1]),
                      callback=lambda k, x, pred: seen.append(k))
    assert seen == list(range(50))
    torch.testing.assert_close(out, x0, atol=1e-3, rtol=1e-3)


def test_seeded_noise_is_per_sample():
    a = SeededNoise([5, 6])(torch.empty(2, 3))
    b = SeededNoise([6])(torch.empty(1, 3))
    assert torch.equal(a[1], b[0])
    with pytest.raises(ValueError, match="batch of 3 but 2 seeds"):
        SeededNoise([1, 2])(torch.empty(3, 1))


def test_sample_dispatch_rejects_bad_input():
    d = GaussianDiffusion.create("10")
    with pytest.raises(ValueError, match="unknown chain sampler 'euler'; valid: ddpm, ddim"):
        sample("euler", None, torch.zeros(1), d)
    with pytest.raises(ValueError, match="ddim sampler only"):
        sample("ddpm", None, torch.zeros(1), d, eta=0.5)


def test_training_losses_hybrid():
    d = GaussianDiffusion.create(None)
    x0, noise = torch.rand(4, 2, 4, 4) * 2 - 1, torch.randn(4, 2, 4, 4)
    weight = torch.zeros(1, requires_grad=True)

    def model_fn(xt, t):  # eps channels ignore `weight`; variance channels depend on it
        return torch.cat([xt * 0.5, torch.zeros_like(xt) + weight], dim=1)

    i = torch.tensor([0, 10, 500, 999])
    terms = d.training_losses(model_fn, x0, i, noise)
    xt = d.q_sample(x0, i, noise)
    torch.testing.assert_close(terms["mse"], ((noise - 0.5 * xt) ** 2).mean(dim=(1, 2, 3)))
    assert terms["loss"].shape == (4,) and torch.isfinite(terms["loss"]).all()
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    terms["vb"].sum().backward()
    assert weight.grad is not None and weight.grad.abs() > 0  # the VB term trains the variance only


def test_loss_weightings():
    d = GaussianDiffusion.create(None)
    i = torch.tensor([0, 300, 600, 999])
    acp = torch.from_numpy(d._np["alphas_cumprod"][i.numpy()]).float()
    snr = acp / (1 - acp)
    torch.testing.assert_close(d.loss_weights(i), torch.ones(4))
    torch.testing.assert_close(d.loss_weights(i, "min-snr-5"), snr.clamp(max=5) / snr)
    x0_clip = d.loss_weights(i, "x0-clip-20")
    torch.testing.assert_close(x0_clip, (1 / snr).clamp(1, 20))
    assert x0_clip[0] == 1 and x0_clip[-1] == 20 and 1 < x0_clip[1] < 20  # eps-MSE, x0-MSE, capped

    x0, noise = torch.rand(4, 1, 4, 4) * 2 - 1, torch.randn(4, 1, 4, 4)
    d_fixed = GaussianDiffusion.create(None, learn_sigma=False)
    terms = d_fixed.training_losses(lambda xt, t: xt * 0.5, x0, i, noise, "x0-clip-20")
    torch.testing.assert_close(terms["loss"], terms["mse"] * x0_clip)  # mse stays the plain eps-MSE
    for bad in ("snr", "min-snr-0", "x0-clip-x", "x0-clip--1"):
        with pytest.raises(ValueError, match="unknown loss weighting"):
            d.loss_weights(i, bad)


def test_normal_kl_closed_form():
    m, lv = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(normal_kl(m, lv, m, lv), torch.zeros(5), atol=1e-6, rtol=0)
    # KL(N(0, 1) || N(1, 1)) = 1/2;  KL(N(0, 1) || N(0, e^2)) = (2 + e^-2 - 1) / 2
    assert normal_kl(*torch.tensor([0.0, 0.0, 1.0, 0.0])).item() == pytest.approx(0.5)
    assert normal_kl(*torch.tensor([0.0, 0.0, 0.0, 2.0])).item() == pytest.approx((1 + np.exp(-2.0)) / 2)


def test_guidance_arithmetic():
    def model_fn(x, t, y, branch=None):  # output channel c = y + c so cond and uncond are easy to tell apart
        return (y.float()[:, None, None, None] + torch.arange(8.0)[None, :, None, None]).expand(-1, 8, 2, 2)

    x, t, y = torch.zeros(2, 4, 2, 2), torch.zeros(2), torch.tensor([3, 5])
    null, s = 10, 4.0
    c, u = (y,), (torch.full_like(y, null),)
    out = classifier_free_guidance(model_fn, s, eps_channels=4)(x, t, c, u)
    cond, uncond = model_fn(x, t, y), model_fn(x, t, torch.full_like(y, null))
    torch.testing.assert_close(out[:, :4], uncond[:, :4] + s * (cond[:, :4] - uncond[:, :4]))
    torch.testing.assert_close(out[:, 4:], cond[:, 4:])
    legacy = classifier_free_guidance(model_fn, s, eps_channels=4, mode="dit_legacy")(x, t, c, u)
    torch.testing.assert_close(legacy[:, :3], out[:, :3])
    torch.testing.assert_close(legacy[:, 3:], cond[:, 3:])
    two_pass = classifier_free_guidance(model_fn, s, eps_channels=4, batched=False)(x, t, c, u)
    torch.testing.assert_close(two_pass, out)
    torch.testing.assert_close(classifier_free_guidance(model_fn, 1.0, 4)(x, t, c, u), cond)
    with pytest.raises(ValueError, match="unknown guidance mode"):
        classifier_free_guidance(model_fn, 2.0, 4, mode="half")
