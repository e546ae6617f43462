"""diffusers' cache hooks as peers: same function as our model when nothing is reused, engagement, runs."""

import ast

import pytest
import torch

from skipdit import Condition, Sampling, generate
from skipdit.models import LatteT2V, LatteT2VConfig
from skipdit.models.random import randomize_

from .conftest import tiny_model

pytest.importorskip("diffusers")
from skipdit.bench.diffusers_peers import DiffusersPeer, calibrate_magcache  # noqa: E402

STEPS = 8
SAMPLING = Sampling(sampler="ddim", steps=STEPS, guidance_scale=2.0)
TINY_T2V = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_heads=2, num_frames=4,
                caption_channels=12)


class PaddedEncoder:
    """Deterministic caption embeddings whose masks hide some padding, to test masks reach diffusers."""

    def encode(self, prompts):
        g = torch.Generator().manual_seed(sum(map(ord, "".join(prompts))) + 1)
        mask = torch.arange(5) < 3 + torch.arange(len(prompts))[:, None] % 2  # 3 or 4 real tokens
        return torch.randn(len(prompts), 5, 12, generator=g), mask


def dit():
    return tiny_model(long_skip=False)


def t2v():
    torch.manual_seed(0)
    return randomize_(LatteT2V(LatteT2VConfig(**TINY_T2V))).eval()


def run(model, **changes):
    text = Condition(prompts=["a cat", "a dog"], text_encoder=PaddedEncoder())
    cond = [1, 2] if model.conditioning == "class" else text
    return generate(model, [0, 1], cond, sampling=SAMPLING.replace(**changes))


NEVER = {  # settings under which each hook computes everything
    "dit": [("none", {}), ("pab", dict(spatial_attention_block_skip_range=1)), ("fbc", dict(threshold=0.0)),
            ("magcache", dict(mag_ratios=[1.0] * STEPS, threshold=-1.0))],
    "t2v": [("none", {}),
            ("pab", dict(spatial_attention_block_skip_range=1, temporal_attention_block_skip_range=1,
                         cross_attention_block_skip_range=1)),
            ("fastercache", dict(spatial_attention_timestep_skip_range=(0, 0),
                                 unconditional_batch_timestep_skip_range=(0, 0)))],
}


@pytest.mark.parametrize("family", ["dit", "t2v"])
def test_peer_without_reuse_is_our_model(family):
    model = dit() if family == "dit" else t2v()
    base = run(model)
    for method, options in NEVER[family]:
        peer = DiffusersPeer(model, method, **options)
        out = run(peer)
        torch.testing.assert_close(out.samples, base.samples, atol=1e-4, rtol=0, msg=method)
        report = peer.report()
        assert report.forwards == STEPS and report.reused == 0 and not peer.engaged, method
        assert report.block_calls == STEPS * model.config.depth * (1 if family == "dit" else 2)


def test_dit_methods_engage():
    model = dit()
    base = run(model)
    ratios = calibrate_magcache(model, [0, 1], [1, 2], sampling=SAMPLING)
    assert len(ratios) == STEPS and ratios[0] == 1.0
    for method, options in [("pab", {}), ("fbc", dict(threshold=1.0)), ("magcache", dict(mag_ratios=ratios,
                                                                                            threshold=0.5))]:
        peer = DiffusersPeer(model, method, **options)
        out = run(peer)
        report = peer.report()
        assert peer.engaged and not torch.allclose(out.samples, base.samples), method
        if method == "pab":
            assert report.attention_reused > 0 and report.blocks_skipped == 0
        else:  # whole blocks skipped; FBC always runs the first block, MagCache none
            assert report.blocks_skipped > 0 and report.blocks_skipped % (model.config.depth - (method == "fbc")) == 0


def test_latte_t2v_methods_engage():
    model = t2v()
    base = run(model)
    for method in ("pab", "fastercache"):
        peer = DiffusersPeer(model, method)
        out = run(peer)
        report = peer.report()
        assert peer.engaged and not torch.allclose(out.samples, base.samples), method
        assert report.attention_reused > 0 and report.blocks_skipped == 0
        assert (report.half_batch_forwards > 0) == (method == "fastercache")


def test_magcache_ratios_match_what_diffusers_prints(capsys):
    model = dit()
    ratios = calibrate_magcache(model, [0, 1], [1, 2], sampling=SAMPLING)
    assert capsys.readouterr().out == ""  # diffusers' print is captured
    run(DiffusersPeer(model, "magcache", calibrate=True, num_inference_steps=STEPS))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[1.0")]
    assert len(printed) == 1
    assert ratios == pytest.approx(ast.literal_eval(printed[0]), rel=1e-5)


@pytest.mark.parametrize("family,method,options", [("dit", "pab", {}), ("dit", "fbc", dict(threshold=1.0)),
                                                   ("t2v", "fastercache", {})])
def test_runs_are_independent(family, method, options):
    model = dit() if family == "dit" else t2v()
    peer = DiffusersPeer(model, method, **options)
    first, report = run(peer), peer.report()
    again = run(peer)  # a new run is detected from the timestep going up
    torch.testing.assert_close(again.samples, first.samples, atol=0, rtol=0)
    assert peer.report().forwards == 2 * STEPS
    peer.reset()
    assert peer.report().forwards == 0
    third = run(peer)
    torch.testing.assert_close(third.samples, first.samples, atol=0, rtol=0)
    assert peer.report() == report


def test_guidance_in_two_passes():
    model = dit()
    base = run(model, batched_guidance=False)
    exact = DiffusersPeer(model, "fbc", threshold=0.0)  # one cache context per pass
    torch.testing.assert_close(run(exact, batched_guidance=False).samples, base.samples, atol=1e-4, rtol=0)
    cached = DiffusersPeer(model, "fbc", threshold=1.0)
    run(cached, batched_guidance=False)
    assert cached.engaged
    with pytest.raises(ValueError, match="batched_guidance=True"):
        run(DiffusersPeer(model, "pab"), batched_guidance=False)


def test_bad_requests_fail_clearly():
    with pytest.raises(ValueError, match="no diffusers peer 'fastercache' for DiT.*DiT: none, pab, fbc, magcache"):
        DiffusersPeer(dit(), "fastercache")
    with pytest.raises(ValueError, match="Latte-T2V: none, pab, fastercache"):
        DiffusersPeer(t2v(), "fbc")
    with pytest.raises(ValueError, match="no diffusers peer 'teacache'"):
        DiffusersPeer(dit(), "teacache")
    with pytest.raises(ValueError, match="no long skips"):
        DiffusersPeer(tiny_model(long_skip=True), "pab")
    with pytest.raises(ValueError, match="unknown FirstBlockCacheConfig option.*valid: threshold"):
        DiffusersPeer(dit(), "fbc", treshold=0.1)
    with pytest.raises(ValueError, match="valid: .*spatial_attention_block_skip_range"):
        DiffusersPeer(dit(), "pab", current_timestep_callback=lambda: 0)
    with pytest.raises(ValueError, match="calibrate_magcache"):
        DiffusersPeer(dit(), "magcache")
    with pytest.raises(ValueError, match="brings its own cache"):
        DiffusersPeer(dit(), "none")(torch.randn(1, 3, 8, 8), torch.tensor([10]), torch.tensor([1]), cache=object())
