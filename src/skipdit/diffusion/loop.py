"""What the solvers share: the model function's contract and the step loop that tells the cache.

``model_fn(x, t)`` takes the sample as the network sees it (the VP scale, x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε)
and ``t`` of shape (N,) on the original 0..T-1 scale, and returns the network's output: the ε-prediction in
its first C channels, then any learned-variance channels, which the solvers ignore (they are ODE solvers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step, x after the step, predicted x0)


def denoising_steps(num_steps: int, cache_state, progress: bool) -> Iterator[int]:
    """The step indices 0..num_steps-1, each announced to ``cache_state`` once, before the step's first model
    call: a step that calls the model twice (Heun) is still one cache step, planned once."""
    for k in tqdm(range(num_steps), desc="sampling", leave=False, disable=not progress):
        if cache_state is not None:
            cache_state.begin_step(k)
        yield k


def timestep(value: float, like: torch.Tensor) -> torch.Tensor:
    """The (N,) float timestep tensor of one step, for a batch shaped like ``like`` (fractional for σ-space
    samplers; the networks embed t sinusoidally, so any real t is defined)."""
    return torch.full((like.shape[0],), float(value), device=like.device, dtype=torch.float32)


def noise_prediction(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ε: the first C channels of the network output (learned-variance channels dropped), in ``x``'s dtype, so
    a bf16 network under autocast still leaves the solver's arithmetic in float32."""
    return out[:, : x.shape[1]].to(x.dtype)
