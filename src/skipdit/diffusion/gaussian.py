"""Gaussian diffusion math (Ho et al. 2020; Nichol & Dhariwal 2021), as used by DiT and Skip-DiT.

A :class:`GaussianDiffusion` is a (possibly respaced) chain of ``S`` steps. Index ``i`` in ``0..S-1``
is a position in that chain; ``timestep_map[i]`` is the original timestep (0..T-1) the network sees.
Everything here is a pure function of tensors: no network calls, no sampling loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import UserError
from .schedule import make_betas, respace_betas, space_timesteps

VARIANCE_TYPES = ("learned_range", "fixed_large", "fixed_small")
LOSS_WEIGHTINGS = ("uniform", "min-snr-<gamma>", "x0-clip-<gamma>")


def parse_loss_weighting(spec: str) -> tuple[str, float | None]:
    """``"uniform"`` -> ("uniform", None); ``"min-snr-5"`` -> ("min-snr", 5.0); ``"x0-clip-20"`` -> ("x0-clip", 20.0).

    Weights of the eps-MSE as functions of SNR(t) = acp / (1 - acp):

    * ``uniform``: 1 (DiT, Latte and every official recipe);
    * ``min-snr-g``: min(SNR, g) / SNR (Hang et al. 2023): low-noise steps count less;
    * ``x0-clip-g``: clip(1 / SNR, 1, g): the x0-MSE where 1/g <= SNR <= 1, the eps-MSE where the image is
      clear, g times the eps-MSE where it is drowned. An eps-MSE weighs an error in x0 by SNR, so the
      high-noise steps that decide the layout (where a digit is, which way it moves) barely move the weights;
      this lifts them by up to g.
    """
    if spec == "uniform":
        return "uniform", None
    for kind in ("min-snr", "x0-clip"):
        if spec.startswith(kind + "-"):
            try:
                gamma = float(spec[len(kind) + 1 :])
            except ValueError:
                break
            if gamma > 0:
                return kind, gamma
    raise UserError(f"unknown loss weighting {spec!r}; valid: {', '.join(LOSS_WEIGHTINGS)} (gamma > 0)")


class GaussianDiffusion:
    def __init__(self, betas: np.ndarray, timestep_map: list[int] | None = None, variance: str = "learned_range"):
        if variance not in VARIANCE_TYPES:
            raise UserError(f"unknown variance type {variance!r}; valid: {', '.join(VARIANCE_TYPES)}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise UserError("betas must be a 1-D array in (0, 1]")
        self.variance = variance
        self.num_steps = len(betas)
        self.timestep_map = list(range(self.num_steps)) if timestep_map is None else list(timestep_map)
        alphas = 1.0 - betas
        acp = np.cumprod(alphas)
        acp_prev = np.append(1.0, acp[:-1])
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        # log of the posterior variance, clipped because it is 0 at the start of the chain
        post_log_var = np.log(np.append(post_var[1], post_var[1:]))
        self._np = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_acp": np.sqrt(acp),
            "sqrt_one_minus_acp": np.sqrt(1.0 - acp),
            "sqrt_recip_acp": np.sqrt(1.0 / acp),
            "sqrt_recipm1_acp": np.sqrt(1.0 / acp - 1),
            "snr": acp / (1.0 - acp),
            "post_var": post_var,
            "post_log_var": post_log_var,
            "post_coef_x0": betas * np.sqrt(acp_prev) / (1.0 - acp),
            "post_coef_xt": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
            "fixed_large_log_var": np.log(np.append(post_var[1], betas[1:])),
        }
        self._tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    @classmethod
    def create(
        cls, respacing: str | int | None = None, *, schedule: str = "linear", num_timesteps: int = 1000,
        learn_sigma: bool = True,
    ) -> GaussianDiffusion:
        """DiT's ``create_diffusion``: a ``schedule`` chain of ``num_timesteps``, respaced by ``respacing``
        (None keeps every step). Without learned sigma the variance is fixed to beta_t ("large")."""
        betas = make_betas(schedule, num_timesteps)
        keep = list(range(num_timesteps)) if respacing is None else space_timesteps(num_timesteps, respacing)
        variance = "learned_range" if learn_sigma else "fixed_large"
        return cls(respace_betas(betas, keep), keep, variance)

    @property
    def learn_sigma(self) -> bool:
        return self.variance == "learned_range"

    def sampling_timesteps(self) -> list[int]:
        """Original timesteps in sampling order (high to low), e.g. 999, 995, ..., 0 for "250"."""
        return self.timestep_map[::-1]

    # -- table lookup ---------------------------------------------------------------------------------
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        tables = self._tables.get(device)
        if tables is None:
            tables = self._tables[device] = {k: torch.from_numpy(v).to(device) for k, v in self._np.items()}
            tables["timestep_map"] = torch.tensor(self.timestep_map, device=device)
        return tables[name]

    def _at(self, name: str, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table values at chain indices ``i`` (N,), broadcastable to ``like`` and in float32."""
        values = self._table(name, i.device)[i].float()
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, i: torch.Tensor) -> torch.Tensor:
        """The original timesteps the network is called with for chain indices ``i``."""
        return self._table("timestep_map", i.device)[i]

    # -- forward process ------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._at("sqrt_acp", i, x0) * x0 + self._at("sqrt_one_minus_acp", i, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, i: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("post_coef_x0", i, xt) * x0 + self._at("post_coef_xt", i, xt) * xt
        return mean, self._at("post_var", i, xt), self._at("post_log_var", i, xt)

    def x0_from_eps(self, xt: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self._at("sqrt_recip_acp", i, xt) * xt - self._at("sqrt_recipm1_acp", i, xt) * eps

    def eps_from_x0(self, xt: torch.Tensor, i: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (self._at("sqrt_recip_acp", i, xt) * xt - x0) / self._at("sqrt_recipm1_acp", i, xt)

    # -- reverse process ------------------------------------------------------------------------------
    def p_mean_variance(self, model_out: torch.Tensor, xt: torch.Tensor, i: torch.Tensor, clip_denoised: bool = False):
        """Mean, log-variance and predicted x0 of p(x_{t-1} | x_t) from the network output.

        With learned sigma the output has 2C channels: eps, then v in [-1, 1] interpolating the
        log-variance between the posterior variance and beta_t (improved DDPM, eq. 15).
        """
        c = xt.shape[1]
        if self.learn_sigma:
            if model_out.shape[1] != 2 * c:
                raise UserError(f"learned-sigma model must output {2 * c} channels, got {model_out.shape[1]}")
            eps, v = model_out[:, :c], model_out[:, c:]
            frac = (v.float() + 1) / 2
            log_var = frac * self._at("log_betas", i, xt) + (1 - frac) * self._at("post_log_var", i, xt)
        else:
            eps = model_out[:, :c]
            log_var = self._at("fixed_large_log_var", i, xt).expand_as(xt)
        x0 = self.x0_from_eps(xt, i, eps.float())
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, xt, i)
        return mean, log_var, x0

    def ddim_step(self, xt: torch.Tensor, i: torch.Tensor, x0: torch.Tensor, eta: float):
        """Mean and standard deviation of the DDIM update x_t -> x_{t-1} (Song et al. 2021, eq. 12)."""
        eps = self.eps_from_x0(xt, i, x0)
        abar, abar_prev = self._at("alphas_cumprod", i, xt), self._at("alphas_cumprod_prev", i, xt)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        return x0 * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps, sigma

    # -- training loss --------------------------------------------------------------------------------
    def training_losses(
        self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
        i: torch.Tensor, noise: torch.Tensor | None = None, weighting: str = "uniform",
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses. ``loss`` = eps-MSE (times the ``weighting`` of :func:`parse_loss_weighting`),
        plus with learned sigma the variational bound term (``vb``) computed with the mean frozen, scaled by
        S/1000 (the "hybrid" loss of improved DDPM). ``mse`` is always the plain eps-MSE, for logs."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, i, noise)
        out = model_fn(xt, self.model_timesteps(i))
        c = x0.shape[1]
        terms = {"mse": _mean_flat((noise - out[:, :c].float()) ** 2)}
        terms["loss"] = terms["mse"] * self.loss_weights(i, weighting)
        if self.learn_sigma:
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x0, xt, i) * (self.num_steps / 1000.0)
            terms["loss"] = terms["loss"] + terms["vb"]
        return terms

    def loss_weights(self, i: torch.Tensor, weighting: str = "uniform") -> torch.Tensor:
        """(N,) weights of the eps-MSE at chain indices ``i`` (see :func:`parse_loss_weighting`)."""
        kind, gamma = parse_loss_weighting(weighting)
        snr = self._table("snr", i.device)[i].float()
        if kind == "min-snr":
            return snr.clamp(max=gamma) / snr
        if kind == "x0-clip":
            return snr.reciprocal().clamp(1.0, gamma)
        return torch.ones_like(snr)

    def vb_terms_bpd(self, model_out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, i: torch.Tensor):
        """KL(q || p) in bits per dim, or the decoder NLL at the first step of the chain."""
        true_mean, _, true_log_var = self.q_posterior(x0, xt, i)
        mean, log_var, _ = self.p_mean_variance(model_out, xt, i)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return torch.where(i == 0, nll, kl)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL divergence between two diagonal Gaussians, elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under a Gaussian (DDPM decoder)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))
