"""ToCa, token-wise feature caching (Zou et al. 2024, "Accelerating Diffusion Transformers with Token-wise
Feature Caching", ICLR 2025).

Every ``N`` steps a full step computes every sublayer and keeps its output. On the ``N - 1`` cached steps
after it, each attention and MLP sublayer recomputes only the fraction ``ratio`` of its tokens, those whose
kept values score highest, writes them into its kept output, and returns that output: the other tokens reuse
what was kept. The adaLN modulation, gates and residual adds are recomputed with the current timestep, as
in FORA.

    toca:N=3,ratio=0.3                  # a full step every 3; cached steps recompute 30% of the tokens
    toca:N=4,ratio=0.2,attn=0           # attention reused whole on cached steps, MLPs on 20% of the tokens
    toca:N=3,ratio=0.3,score=drift      # cheaper score: how far each token's input moved since it was computed

Keys: ``N`` (the full-step interval), ``ratio`` (the fraction of tokens recomputed on cached steps by
cross-attention and MLP sublayers, and by self-attention unless ``attn`` gives its own), ``attn``
(self-attention's fraction; ``none``: as ``ratio``), ``score`` (below), ``age`` (the weight of the cache-age
score) and ``bonus`` (the spatial-spread bonus). A sublayer of T tokens recomputes ``ceil(ratio * T)`` of them.

**Which tokens** (the paper's §3.3). Each sublayer scores its tokens per sample (per row), so a sample never
depends on its batch mates, and recomputes the top ``ceil(ratio * T)``:

* the *salience* ``score``: ``attn`` (the paper's s1), the attention each token received in its block's
  self-attention at the last full step, summed over the queries, averaged over the heads and L2-normalised
  over the tokens: tokens that others attend to spread their error, so they are refreshed first. SDPA does not
  return its weights, so a full step followed by cached ones runs self-attention with the softmax written out
  (the same MACs, but the weights are materialised: slower than a fused kernel on large token counts).
  ``drift`` (ours, not the paper's): the relative L2 change of each token's sublayer input since its output
  was last computed, L2-normalised; it keeps SDPA on every step. ``age``: no salience.
* plus ``age`` × (cached steps since the token was last computed) / N: the paper's cache-frequency score s3,
  which keeps any token from being reused for too long;
* plus the paper's spatial-uniformity score s4 on image token grids (not the temporal sublayers of video
  models): in each 2x2 cell of the grid, the best token's score gets ``bonus`` times itself added, so the
  refreshed tokens spread over the image.

The defaults (``age=0.25``, ``bonus=0.6``) are the official DiT-ToCa's. Not reproduced: the paper's s2
(cross-attention entropy), and its schedule of the ratio over depth, module and time (the official DiT
setting shifts all of the attention's share to the MLPs; ``attn=0`` is that split at a constant ratio).

**Cost.** MLPs and cross-attention act on each query token alone, so on k of T tokens they are exact and cost
k/T of the full sublayer (cross-attention's keys and values of the text are recomputed in full: they are
small). Self-attention on a subset is not token-wise: the k refreshed tokens query the keys and values of
*all* T tokens of the current input, so its K/V projection (2/3 of the QKV projection) runs on all T tokens
and only the Q and output projections and the attention itself shrink to k/T: at ratio 0.3 a self-attention
sublayer costs about 65% of its projections and 30% of its attention products. ``CacheStats`` counts units,
and every unit runs, so its ideal speed-up stays 1 for ToCa; ``skipdit bench`` counts the MACs the run
executed, which see the reduced work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.layers import take_rows
from .base import CachePolicy, Key, StepPlan, integer, number, parse_float
from .schedule import interval_schedule

SCORES = ("attn", "drift", "age")
SUBLAYERS = ("attn", "cross_attn", "mlp", "temporal_attn", "temporal_mlp")


def _fraction(value: str, key: str, spec: str) -> float:
    return parse_float(value, key, spec, minimum=0.0)


def _optional_fraction(value: str, key: str, spec: str) -> float | None:
    return None if value.lower() == "none" else _fraction(value, key, spec)


def _score(value: str, key: str, spec: str) -> str:
    if value not in SCORES:
        raise UserError(f"malformed cache spec {spec!r}: {key} must be one of {', '.join(SCORES)}, got {value!r}")
    return value


KEYS = {"N": Key("interval", integer), "ratio": Key("ratio", _fraction), "attn": Key("attn_ratio", _optional_fraction),
        "score": Key("score", _score), "age": Key("age_weight", number), "bonus": Key("bonus", number)}


@dataclass
class TokenCache:
    """What one sublayer keeps: its output and, per token, the cached steps since the token was computed."""

    out: torch.Tensor  # (R, T, D)
    age: torch.Tensor  # (R, T) int32
    inp: torch.Tensor | None = None  # (R, T, D) the input each token's output was computed from (score=drift)


@dataclass
class TocaState:
    """Per guidance branch: the :class:`TokenCache` of every sublayer, keyed ``(unit, name)``, and the attention
    salience of every block's self-attention at the last full step, keyed ``(unit, temporal)``."""

    kept: dict = field(default_factory=dict)
    salience: dict = field(default_factory=dict)


def _is_self_attention(name: str) -> bool:
    return name.endswith("attn") and not name.endswith("cross_attn")


def _block(key) -> tuple[int, bool]:
    """The block a sublayer belongs to: its unit, and whether it is the temporal block of a video unit."""
    unit, name = key
    return unit, name.startswith("temporal_")


@dataclass(frozen=True)
class TokenCaching(CachePolicy):
    interval: int = 3
    ratio: float = 0.3
    attn_ratio: float | None = None
    score: str = "attn"
    age_weight: float = 0.25
    bonus: float = 0.6
    family: str = "toca"
    keys = KEYS
    State = TocaState

    def __post_init__(self):
        if self.interval < 1:
            raise UserError(f"ToCa interval N must be >= 1, got {self.interval}")
        for name, value in (("ratio", self.ratio), ("attn", self.attn_ratio)):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"ToCa {name} must be a fraction in [0, 1], got {value}")
        if self.score not in SCORES:
            raise UserError(f"ToCa score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.age_weight < 0 or self.bonus < 0:
            raise UserError(f"ToCa age and bonus must be >= 0, got age={self.age_weight}, bonus={self.bonus}")

    def fraction(self, name: str) -> float:
        """The fraction of tokens sublayer ``name`` recomputes on a cached step."""
        if self.attn_ratio is not None and _is_self_attention(name):
            return self.attn_ratio
        return self.ratio

    def recomputed(self, name: str, tokens: int) -> int:
        """Tokens of ``tokens`` that sublayer ``name`` recomputes on a cached step: ``ceil(fraction * tokens)``
        (rounded first, so 0.1 x 30 is 3, not 4)."""
        return math.ceil(round(self.fraction(name) * tokens, 9))

    @property
    def reads_attention(self) -> bool:
        """Whether full steps read the self-attention weights: only when some cached step selects tokens by them."""
        partial = any(0 < r < 1 for r in (self.ratio, self.fraction("attn")))
        return self.score == "attn" and self.interval > 1 and partial

    def plan(self, timesteps: Sequence[int], num_units: int) -> list[StepPlan]:
        """Cached steps reuse the sublayers that recompute fewer than all of their tokens (at ratio 1 none do,
        and every step is full)."""
        every = ((0, num_units),)
        partial = tuple(name for name in SUBLAYERS if self.fraction(name) < 1)
        return [StepPlan(int(t), full or not partial, every, () if full else partial)
                for t, full in zip(timesteps, interval_schedule(timesteps, self.interval))]

    def run(self, model, h: torch.Tensor, c, step: StepPlan, state: TocaState) -> tuple[torch.Tensor, StepPlan]:
        def memo(key, fn, *args):
            kept, tokens = state.kept.get(key), args[0].shape[1]
            if step.full or kept is None or key[1] not in step.reuse or self.recomputed(key[1], tokens) >= tokens:
                return self._compute(key, fn, args, state)
            return self._refresh(key, fn, args, kept, state)

        return model.run_units(h, c, memo=memo), step

    def _compute(self, key, fn, args, state: TocaState) -> torch.Tensor:
        """Every token: the sublayer as it is, kept (with its attention salience, if the score reads it)."""
        x = args[0]
        if self.reads_attention and _is_self_attention(key[1]):
            out, received = fn(*args, received=True)
            state.salience[_block(key)] = F.normalize(received.float(), dim=-1)
        else:
            out = fn(*args)
        age = torch.zeros(out.shape[:2], dtype=torch.int32, device=out.device)
        state.kept[key] = TokenCache(out, age, x if self.score == "drift" else None)
        return out

    def _refresh(self, key, fn, args, kept: TokenCache, state: TocaState) -> torch.Tensor:
        """The top-scored tokens recomputed into the kept output, which stands in for the rest."""
        x, name = args[0], key[1]
        count = self.recomputed(name, x.shape[1])
        score = self._scores(key, x, kept, state) if count else None
        kept.age += 1
        if not count:
            return kept.out
        rows = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :count]  # (R, k)
        kept.age.scatter_(1, rows, 0)
        fresh = fn(*args, rows=rows) if name.endswith("attn") else fn(take_rows(x, rows))  # (R, k, D)
        kept.out.scatter_(1, rows.unsqueeze(-1).expand(-1, -1, kept.out.shape[-1]), fresh.to(kept.out.dtype))
        if kept.inp is not None:
            kept.inp.scatter_(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]), take_rows(x, rows))
        return kept.out

    def _scores(self, key, x: torch.Tensor, kept: TokenCache, state: TocaState) -> torch.Tensor:
        """(R, T): salience + age x (cached steps) / N, with the spatial bonus on image grids."""
        score = self.age_weight / self.interval * kept.age.float()
        if self.score == "attn":
            score = score + state.salience[_block(key)]
        elif self.score == "drift":
            drift = (x.float() - kept.inp.float()).norm(dim=-1) / kept.inp.float().norm(dim=-1).clamp_min(1e-12)
            score = score + F.normalize(drift, dim=-1)
        side = math.isqrt(x.shape[1])
        if self.bonus and not _block(key)[1] and side * side == x.shape[1] and side % 2 == 0:
            score = _spread(score, side, self.bonus)
        return score


def _spread(score: torch.Tensor, side: int, bonus: float) -> torch.Tensor:
    """The paper's s4: in each 2x2 cell of the ``side`` x ``side`` token grid (row-major), the best token's
    score times ``1 + bonus``."""
    rows = score.shape[0]
    cells = score.reshape(rows, side // 2, 2, side // 2, 2).transpose(2, 3).reshape(rows, -1, 4)  # (R, cells, 4)
    best = cells.max(dim=-1, keepdim=True)
    cells = cells + bonus * best.values * F.one_hot(best.indices.squeeze(-1), 4)
    return cells.reshape(rows, side // 2, side // 2, 2, 2).transpose(2, 3).reshape(rows, -1)
