"""diffusers' own cache hooks as external peers, on our weights, seeds and sampler (peers §2.2, §2.5).

:class:`DiffusersPeer` stands in for our model inside :func:`skipdit.generate`: it converts the model
to the equivalent diffusers transformer (same numerics), applies one diffusers cache hook to it and
calls it with our inputs. The pairs that work (peers §2.5; everything else errors or silently does
nothing in diffusers 0.42.1):

* DiT: ``pab`` (Pyramid Attention Broadcast), ``fbc`` (First-Block-Cache), ``magcache`` (MagCache,
  with ratios from :func:`calibrate_magcache`);
* Latte-T2V: ``pab`` and ``fastercache``;
* both: ``none``, the diffusers transformer without a hook (the peers' own uncached baseline).

Only vanilla models convert: diffusers has no long skips.

**Runs.** diffusers' hooks keep state across calls. A call whose timestep is above the previous
call's starts a new sampling run and resets the hook state, so consecutive ``generate`` calls (and the
batches of one call) are independent. :meth:`DiffusersPeer.reset` does the same explicitly and also
clears the counters of :meth:`DiffusersPeer.report`; call it at the start of each measured run, and
always when a run may start at a timestep not above the last one (a one-step run).

**Guidance.** Our guidance batches [cond, uncond]. PAB, FBC and MagCache decide over the whole batch,
so the order does not matter to them. FasterCache assumes one batch [uncond, cond]: the peer swaps
the halves on the way in and out; without guidance pass ``is_guidance_distilled=True``. Guidance in
two passes (``Sampling(batched_guidance=False)``) gets one diffusers cache context per pass with FBC and MagCache;
PAB and FasterCache keep one state per attention module, so they require batched guidance.

**Engagement.** Some hooks silently do nothing (peers §2.5), so the peer counts, with forward
pre-hooks, the blocks and attention modules called and those actually computed;
:meth:`DiffusersPeer.report` says how much was reused and :attr:`DiffusersPeer.engaged` whether
anything was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError

METHODS: dict[str, tuple[str, ...]] = {
    "DiT": ("none", "pab", "fbc", "magcache"),
    "Latte-T2V": ("none", "pab", "fastercache"),
}

# DiT: diffusers' own fallback (spatial range 2, window (100, 800)). Latte-T2V: VideoSys' LattePABConfig
# (spatial 2, temporal 3, cross 6, window (100, 800)), with the block identifiers anchored: unanchored,
# every temporal attn1 matches the spatial pattern (peers §2.4).
_PAB_DEFAULTS: dict[str, dict[str, Any]] = {
    "DiT": dict(spatial_attention_block_skip_range=2),
    "Latte-T2V": dict(
        spatial_attention_block_skip_range=2, temporal_attention_block_skip_range=3,
        cross_attention_block_skip_range=6,
        spatial_attention_block_identifiers=("^transformer_blocks",),
        temporal_attention_block_identifiers=("^temporal_transformer_blocks",),
        cross_attention_block_identifiers=("^transformer_blocks",),
    ),
}


def _half(_module: nn.Module) -> float:
    """FasterCache's attention extrapolation weight; diffusers' default, set here to skip its warning."""
    return 0.5


_FASTERCACHE_DEFAULTS: dict[str, Any] = dict(tensor_format="BCFHW", attention_weight_callback=_half)
_BLOCK_LISTS = ("transformer_blocks", "temporal_transformer_blocks")


def _diffusers():
    try:
        import diffusers
        import diffusers.hooks  # noqa: F401  (the cache hooks)
    except ImportError as err:
        raise UserError("diffusers peers need diffusers (tested with 0.42.1): pip install 'skipdit[diffusers]'") \
            from err
    return diffusers


@dataclass(frozen=True)
class PeerReport:
    """What a diffusers cache reused, counted from outside its hooks: block and attention calls, and those
    computed; ``half_batch_forwards`` ran the conditional half only (FasterCache's unconditional skip)."""

    method: str
    forwards: int
    block_calls: int
    blocks_run: int
    attention_calls: int
    attention_run: int
    half_batch_forwards: int

    @property
    def blocks_skipped(self) -> int:
        return self.block_calls - self.blocks_run

    @property
    def attention_reused(self) -> int:
        return self.attention_calls - self.attention_run

    @property
    def reused(self) -> int:
        """Skipped blocks + reused attention outputs + forwards that ran half the batch."""
        return self.blocks_skipped + self.attention_reused + self.half_batch_forwards

    def summary(self) -> str:
        return (
            f"diffusers {self.method}: {self.forwards} forwards, {self.blocks_skipped} of {self.block_calls} "
            f"block calls skipped, {self.attention_reused} of {self.attention_calls} attention outputs reused, "
            f"{self.half_batch_forwards} forwards on the conditional half only"
        )


class TransformerPeer(nn.Module):
    """Our vanilla ``model`` as the equivalent diffusers ``transformer``, driven by an external cache library.

    The base of the external peers (:class:`DiffusersPeer`, :class:`skipdit.bench.cachedit_peers.CacheDitPeer`):
    use one as the model of :func:`skipdit.generate` with ``cache=None``. It implements the model protocol
    (:class:`skipdit.protocol.DiffusionModel`) by asking the model it converts, except the unit seams, which
    belong to the library's hooks here: skipdit's caches cannot act on a peer. A subclass says what its
    hooks reused (``report()``, whose ``summary()`` is one line) and whether they reused anything
    (``engaged``).
    """

    library: str  # whose cache: named in the bench's reasons
    has_long_skips = False  # diffusers' transformers have none
    sublayers: tuple[str, ...] = ()  # no skipdit memo reaches diffusers' attention modules

    def __init__(self, model: nn.Module, transformer: nn.Module):
        super().__init__()
        self.__dict__["model"] = model  # the model it stands in for, not a submodule (its weights are converted)
        self.transformer = transformer

    # -- the model protocol: what generate(), guidance and the bench read ---------------------------------
    config = property(lambda self: self.model.config)
    task = property(lambda self: self.model.task)
    conditioning = property(lambda self: self.model.conditioning)
    num_classes = property(lambda self: self.model.num_classes)
    null_label = property(lambda self: self.model.null_label)
    in_channels = property(lambda self: self.model.in_channels)
    learn_sigma = property(lambda self: self.model.learn_sigma)
    num_frames = property(lambda self: self.model.num_frames)
    num_units = property(lambda self: self.model.num_units)

    def sample_shape(self, num_frames: int | None = None) -> tuple[int, ...]:
        return self.model.sample_shape(num_frames)

    def run_units(self, h, ctx, start=0, stop=None, skips=None, memo=None):
        raise UserError("an external peer brings its own cache: skipdit's caches cannot run its units")

    def first_block_input(self, h, ctx):
        raise UserError("an external peer brings its own cache: skipdit's caches cannot read its blocks")

    def repeated_blocks(self):
        for name in _BLOCK_LISTS:
            yield from getattr(self.transformer, name, ())

    def _call_dit(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.transformer(x, timestep=t, class_labels=y, return_dict=False)[0]  # (N, C_out, H, W)


class DiffusersPeer(TransformerPeer):
    """Our vanilla ``model`` as the diffusers transformer with diffusers' cache ``method`` applied.

    ``options`` go to the diffusers config (``PyramidAttentionBroadcastConfig``, ``FirstBlockCacheConfig``,
    ``MagCacheConfig``, ``FasterCacheConfig``) over the defaults above; the timestep callbacks belong to
    the peer.
    """

    library = "diffusers"

    def __init__(self, model: nn.Module, method: str, **options: Any):
        family = model.config.family
        valid = "; ".join(f"{name}: {', '.join(methods)}" for name, methods in METHODS.items())
        if family not in METHODS or method not in METHODS[family]:
            raise UserError(f"no diffusers peer {method!r} for {family}; the pairs that work (peers §2.5): {valid}")
        if model.has_long_skips:
            raise UserError("diffusers' transformers have no long skips: a diffusers peer wraps a vanilla model")
        lib = _diffusers()
        super().__init__(model, build_dit(model) if family == "DiT" else _build_latte_t2v(model, lib))
        self.family, self.method = family, method
        self._timestep: int | None = None  # of the current call: what the timestep callbacks read
        self._pass = 0  # index of the current call within its denoising step
        self._step = -1  # index of the current step within its run
        self._fresh = True  # no call since the last reset
        self._runs = 0
        self._counts: Counter[str] = Counter()
        self._rows_seen = 0  # batch rows the first layer saw in the current call
        self._options = self._enable(lib, dict(options))
        self._install_counters()

    # -- cache setup ----------------------------------------------------------------------------------
    def _enable(self, lib, options: dict[str, Any]) -> dict[str, Any]:
        hooks = lib.hooks
        if self.method == "none":
            if options:
                raise UserError(f"method 'none' takes no options, got {sorted(options)}")
            return {}
        if self.method == "pab":
            config = config_from(hooks.PyramidAttentionBroadcastConfig, {**_PAB_DEFAULTS[self.family], **options},
                             current_timestep_callback=self._current_timestep)
            hooks.apply_pyramid_attention_broadcast(self.transformer, config)
        elif self.method == "fbc":
            hooks.apply_first_block_cache(self.transformer, config_from(hooks.FirstBlockCacheConfig, options))
        elif self.method == "magcache":
            if options.get("mag_ratios") is None and not options.get("calibrate", False):
                raise UserError("MagCache needs mag_ratios for this model and sampler: get them with "
                                 "calibrate_magcache(...), or pass calibrate=True")
            if "num_inference_steps" not in options:
                if options.get("mag_ratios") is None:
                    raise UserError("pass num_inference_steps (the number of sampling steps) with calibrate=True")
                options["num_inference_steps"] = len(options["mag_ratios"])
            hooks.apply_mag_cache(self.transformer, config_from(hooks.MagCacheConfig, options))
        elif self.method == "fastercache":
            config = config_from(hooks.FasterCacheConfig, {**_FASTERCACHE_DEFAULTS, **options},
                             current_timestep_callback=self._current_timestep)
            hooks.apply_faster_cache(self.transformer, config)
        return options

    def _install_counters(self) -> None:
        """Forward pre-hooks around diffusers' hooks: a block (attention module) that a cache skips is
        still called, but its ``attn1`` (``to_q``) is not."""
        from diffusers.models.attention_processor import Attention

        def count(key: str) -> Callable:
            def hook(_module, _args):
                self._counts[key] += 1
            return hook

        for block in self.repeated_blocks():
            block.register_forward_pre_hook(count("block_calls"))
            block.attn1.register_forward_pre_hook(count("blocks_run"))
        for module in self.transformer.modules():
            if isinstance(module, Attention):
                module.register_forward_pre_hook(count("attention_calls"))
                module.to_q.register_forward_pre_hook(count("attention_run"))

        def rows(_module, args):
            self._rows_seen += args[0].shape[0]

        self.transformer.pos_embed.register_forward_pre_hook(rows)

    # -- runs -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Reset all hook state and the counters of :meth:`report`; the next call starts a run."""
        self._reset_hooks()
        self._timestep, self._pass, self._step, self._fresh, self._runs = None, 0, -1, True, 0
        self._counts.clear()

    def _reset_hooks(self) -> None:
        from diffusers.hooks import HookRegistry

        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks(recurse=True)

    def _current_timestep(self) -> int:
        if self._timestep is None:
            raise RuntimeError("a diffusers cache asked for the timestep outside a DiffusersPeer call")
        return self._timestep

    def _track(self, t: torch.Tensor) -> None:
        """Find where this call is: a new run (timestep went up), another pass of the step, or a new step."""
        now = int(t.reshape(-1)[0])
        if self._timestep is None or now > self._timestep:
            if not self._fresh:
                self._reset_hooks()
            self._pass, self._step = 0, 0
            self._runs += 1
        elif now == self._timestep:
            self._pass += 1
            if self.method in ("pab", "fastercache"):
                raise UserError(f"diffusers' {self.method} keeps one state per attention module: it needs guidance "
                                 "in one batch (Sampling(batched_guidance=True))")
        else:
            self._pass = 0
            self._step += 1
        steps = self._options.get("num_inference_steps")
        if self.method == "magcache" and self._step >= steps:
            raise UserError(f"MagCache was set up for {steps} sampling steps; this run has more")
        self._fresh = False
        self._timestep = now

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, *cond: torch.Tensor | None, cache=None) -> torch.Tensor:
        """``forward(x, t, y)`` for DiT, ``forward(x, t, text, text_mask=None)`` for Latte-T2V, as our models;
        ``t`` on the 0..999 scale."""
        if cache is not None:
            raise UserError("a diffusers peer brings its own cache: call generate(..., cache=None)")
        self._track(t)
        rows = x.shape[0] * (x.shape[2] if x.ndim == 5 else 1)
        self._counts["forwards"] += 1
        self._rows_seen = 0
        context = contextlib.nullcontext()
        if self.method in ("fbc", "magcache"):  # per-pass state; MagCache would otherwise share "inference"
            from diffusers.models.cache_utils import CacheMixin

            context = CacheMixin.cache_context(self.transformer, f"pass{self._pass}")
        with context:
            out = self._call_dit(x, t, *cond) if self.family == "DiT" else self._call_latte(x, t, *cond)
        self._counts["half_batch_forwards"] += int(self._rows_seen < rows)
        return out

    def _call_latte(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        frames = x.shape[2]
        if frames != self.config.num_frames:  # diffusers adds its whole temporal table
            raise UserError(f"the diffusers Latte peer makes {self.config.num_frames} frames, got {frames}")
        swap = self.method == "fastercache" and not self._options.get("is_guidance_distilled", False)
        if swap:
            if x.shape[0] % 2:
                raise UserError("FasterCache expects a guidance batch [cond, uncond]; without guidance pass "
                                 "is_guidance_distilled=True")
            x, t, text, text_mask = (_swap_halves(v) for v in (x, t, text, text_mask))
        mask = None
        if text_mask is not None:  # diffusers uses it per spatial block as is: one row per frame
            mask = text_mask.bool().repeat_interleave(frames, 0).unsqueeze(1)  # (N*F, 1, L)
        out = self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, encoder_attention_mask=mask,
                               return_dict=False)[0]  # (N, C_out, F, H, W)
        return _swap_halves(out) if swap else out

    # -- what it did ----------------------------------------------------------------------------------
    def report(self) -> PeerReport:
        """Counts since the last :meth:`reset` (or construction), over all runs."""
        c = self._counts
        return PeerReport(self.method, c["forwards"], c["block_calls"], c["blocks_run"], c["attention_calls"],
                          c["attention_run"], c["half_batch_forwards"])

    @property
    def engaged(self) -> bool:
        """Whether the cache reused anything since the last reset."""
        return self.report().reused > 0


def config_from(cls, options: dict[str, Any], **owned: Any):
    """``cls(**options, **owned)``, with unknown or peer-owned option names as a ``ValueError``."""
    valid = sorted(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_") and f.name not in owned)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UserError(f"unknown {cls.__name__} option(s) {bad}; valid: {', '.join(valid)}")
    return cls(**options, **owned)


def _swap_halves(v: torch.Tensor | None) -> torch.Tensor | None:
    """[a, b] -> [b, a] along the batch: our guidance order [cond, uncond] <-> FasterCache's [uncond, cond]."""
    if v is None:
        return None
    first, second = v.chunk(2)
    return torch.cat([second, first])


def build_dit(model: nn.Module) -> nn.Module:
    """diffusers' ``DiTTransformer2DModel`` with our DiT's weights (the same function: ``convert.diffusers``)."""
    from ..convert.diffusers import build_diffusers_dit

    return build_diffusers_dit(model)


def _build_latte_t2v(model: nn.Module, lib) -> nn.Module:
    """diffusers' ``LatteTransformer3DModel`` with our weights (our LatteT2V uses its parameter names)."""
    cfg = model.config
    if cfg.mlp_ratio != 4.0:
        raise UserError("diffusers' Latte supports mlp_ratio 4 only")
    target = lib.LatteTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.hidden_size // cfg.num_heads,
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_layers=cfg.depth,
        cross_attention_dim=cfg.hidden_size, attention_bias=cfg.attention_bias, sample_size=cfg.input_size,
        patch_size=cfg.patch_size, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=cfg.norm_eps,
        caption_channels=cfg.caption_channels, video_length=cfg.num_frames,
    )
    target.load_state_dict(model.state_dict(), strict=True)
    param = next(model.parameters())
    return target.to(device=param.device, dtype=param.dtype).eval()


def calibrate_magcache(model: nn.Module, seeds: Sequence[int], condition=None, *, sampling=None,
                       runtime=None) -> list[float]:
    """MagCache's magnitude ratios for ``model`` under this sampler: one calibration run (diffusers'
    ``calibrate=True``, which skips nothing) per batch of ``seeds``, with the ratios computed as diffusers
    does, ``mean_tokens(|r_k| / (|r_{k-1}| + 1e-8))`` of the residual r = last block out - first block in,
    1.0 at the first step, averaged over runs and guidance passes. Pass them as ``mag_ratios``."""
    from ..sampling import Runtime, Sampling, generate

    sampling, runtime = sampling or Sampling(), runtime or Runtime()
    num_steps = sampling.make_sampler(model).model_calls  # forwards per guidance pass (Heun: 2n - 1)
    peer = DiffusersPeer(model, "magcache", calibrate=True, num_inference_steps=num_steps)
    blocks = peer.transformer.transformer_blocks
    head_input: dict[tuple[int, int], torch.Tensor] = {}
    previous: dict[tuple[int, int], torch.Tensor] = {}
    ratios: dict[tuple[int, int], list[float]] = {}

    def before_head(_module, args, kwargs):
        head_input[peer._runs, peer._pass] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def after_tail(_module, _args, output):
        key = (peer._runs, peer._pass)
        residual = output - head_input[key]
        prev = previous.get(key)
        ratio = 1.0 if prev is None else (
            torch.linalg.norm(residual.float(), dim=-1) / (torch.linalg.norm(prev.float(), dim=-1) + 1e-8)
        ).mean().item()
        ratios.setdefault(key, []).append(ratio)
        previous[key] = residual

    handles = [blocks[0].register_forward_pre_hook(before_head, with_kwargs=True),
               blocks[-1].register_forward_hook(after_tail)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # diffusers prints the same ratios
            generate(peer, seeds, condition, sampling=sampling, runtime=runtime)
    finally:
        for handle in handles:
            handle.remove()
    runs = list(ratios.values())
    return [sum(run[k] for run in runs) / len(runs) for k in range(num_steps)]
