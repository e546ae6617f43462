import pytest
import torch

from skipdit import Sampling, generate
from skipdit.cache import CacheStats, SkipCache, interval_schedule, parse_cache
from skipdit.diffusion import space_timesteps

from .conftest import tiny_model

DDPM250 = space_timesteps(1000, "250")[::-1]
DDIM50_LEADING = space_timesteps(1000, "ddim50")[::-1]  # 980, 960, ..., 0 (diffusers DDIM-50)
DDIM50_ADM = space_timesteps(1000, "50")[::-1]  # 999, 979, 958, ..., 0
DDPM100_LEADING = space_timesteps(1000, "leading100+1")[::-1]  # 991, 981, ..., 1


def counts(spec, timesteps, units):
    plan = parse_cache(spec).plan(timesteps, units)
    return sum(p.full for p in plan), sum(not p.full for p in plan)


# Reference §B.3: full / cached steps of the official schedules.
@pytest.mark.parametrize("n,expected", [(2, (128, 122)), (3, (87, 163)), (4, (67, 183)), (5, (54, 196)),
                                        (6, (46, 204))])
def test_c2i_ddpm250_counts(n, expected):
    assert counts(f"c2i:N={n}", DDPM250, 28) == expected


@pytest.mark.parametrize("n,expected", [(2, (143, 107)), (3, (108, 142)), (4, (90, 160)), (5, (80, 170)),
                                        (6, (72, 178))])
def test_c2v_ddpm250_counts(n, expected):
    assert counts(f"c2v:N={n}", DDPM250, 14) == expected


def test_c2v_ddim50_counts_and_warmup():
    plan = parse_cache("c2v:N=2").plan(DDIM50_ADM, 14)
    assert (sum(p.full for p in plan), sum(not p.full for p in plan)) == (28, 22)
    assert all(p.full for p in plan[:5])  # t >= 900: 999, 979, 958, 938, 918


@pytest.mark.parametrize("spec,expected", [("t2v:N2-700-50", (33, 17)), ("t2v:N3-700-50", (28, 22)),
                                           ("t2v:N4-700-50", (25, 25)), ("t2v", (33, 17))])
def test_t2v_ddim50_counts(spec, expected):
    assert counts(spec, DDIM50_LEADING, 28) == expected
    plan = parse_cache(spec).plan(DDIM50_LEADING, 28)
    assert all(p.full for p in plan[:15]) and all(p.full for p in plan[-2:])  # t >= 700; t <= 50


@pytest.mark.parametrize("n,expected", [(2, (67, 33)), (3, (56, 44)), (4, (50, 50)), (5, (48, 52)),
                                        (6, (45, 55))])
def test_t2i_ddpm100_counts(n, expected):
    assert counts(f"t2i:N={n}", DDPM100_LEADING, 40) == expected


def test_c2i_plan_details():
    plan = parse_cache("c2i:N=2").plan(DDPM250, 28)
    assert [p.full for p in plan[:4]] == [True, False, True, False]  # no warm-up: start_t 1000 is dead
    assert all(p.full for p in plan[-5:])  # t = 16..0 follow a reset at t <= 20
    assert plan[1].units == ((0, 4), (24, 28)) and plan[0].units == ((0, 28),)


def test_interval_schedule_by_hand():
    ts = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert interval_schedule(ts, 3) == [True, False, False, True, False, False, True, False, False, True]
    # steps t >= 8 are full; the counter runs on through them (official behaviour, §B.3)
    assert interval_schedule(ts, 2, start_t=8) == [True, True, True, False, True, False, True, False, True, False]
    # reset at t <= 5: the step after it is full again, whatever the counter said
    assert interval_schedule(ts, 4, stop_t=5) == [True, False, False, False, True, True, True, True, True, True]
    assert interval_schedule(ts, 4, stop_t=5, stop_inclusive=False) == \
        [True, False, False, False, True, False, True, True, True, True]


def test_stats_arithmetic():
    plan = SkipCache(interval=2, branch=1).plan([3, 2, 1, 0], 10)
    stats = CacheStats.from_plan(plan, 10)
    assert (stats.full_steps, stats.cached_steps, stats.unit_evals) == (2, 2, 2 * 10 + 2 * 2)
    assert stats.ideal_speedup == pytest.approx(40 / 24)


@pytest.mark.parametrize("spec,expected", [
    ("c2i", SkipCache(2, 4, None, 20, True, "c2i")),
    ("c2i:N=3", SkipCache(3, 4, None, 20, True, "c2i")),
    ("c2v:N=4", SkipCache(4, 1, 900, 50, False, "c2v")),
    ("t2v:N3-650-40", SkipCache(3, 1, 650, 40, True, "t2v")),
    ("t2i:N=5,b=2", SkipCache(5, 2, 700, 50, True, "t2i")),
    ("skip:N=3,b=1,start=700,stop=50", SkipCache(3, 1, 700, 50, True, "skip")),
    ("skip:N=3, b=2, stop<50", SkipCache(3, 2, None, 50, False, "skip")),
    ("c2v:stop=none,start=none", SkipCache(2, 1, None, None, True, "c2v")),
])
def test_spec_parsing(spec, expected):
    policy = parse_cache(spec)
    assert policy == expected
    assert parse_cache(policy.spec()) == policy  # the canonical spec round-trips


@pytest.mark.parametrize("spec,message", [
    ("magic:N=2", "unknown cache 'magic'"), ("c2i:N=0", "N must be >= 1"), ("c2i:N=two", "must be an integer"),
    ("c2i:M=2", "unknown key 'M'"), ("c2i:N", "cannot read 'N'"), ("c2i:b<2", "only 'stop'"),
    ("skip:b=0", "b must be >= 1"),
])
def test_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_cache(spec)


def test_none_specs():
    assert parse_cache(None) is None and parse_cache("none") is None and parse_cache("") is None


class ToyModel:
    """Four scalar units: unit u adds u+1; a long skip adds the popped value (pairs 2<-1, 3<-0)."""

    num_units, has_long_skips, sublayers = 4, True, ()

    def __init__(self):
        self.calls = []

    def run_units(self, h, c, start=0, stop=4, skips=None):
        for u in range(start, stop):
            self.calls.append(u)
            if u >= 2:
                h = h + skips.pop()
            h = h + (u + 1)
            if u < 2:
                skips.append(h)
        return h


@pytest.mark.parametrize("branch", [1, 2])
def test_cached_step_by_hand(branch):
    toy = ToyModel()
    state = SkipCache(interval=2, branch=branch).start(toy, [999, 998])
    x, x2 = torch.tensor(10.0), torch.tensor(100.0)
    state.begin_step(0)
    # full: u0 -> x+1, u1 -> x+3, u2 -> (x+3)+(x+3)+3, u3 -> (2x+9)+(x+1)+4
    assert state.run_units(toy, x, None) == 3 * x + 14
    toy.calls.clear()
    state.begin_step(1)
    out = state.run_units(toy, x2, None)
    if branch == 1:
        # u0 on the new input (x2+1 is pushed), then u3 from the kept state 2x+9 entering it
        assert toy.calls == [0, 3] and out == (2 * x + 9) + (x2 + 1) + 4
    else:
        # u0, u1 fresh (x2+1, x2+3 pushed); u2 starts from the kept x+3
        assert toy.calls == [0, 1, 2, 3] and out == ((x + 3) + (x2 + 3) + 3) + (x2 + 1) + 4
    assert state.stats.cached_steps == 1


def test_state_needs_begin_step():
    toy = ToyModel()
    state = SkipCache().start(toy, [1, 0])
    with pytest.raises(RuntimeError, match="begin_step"):
        state.run_units(toy, torch.tensor(0.0), None)
    with pytest.raises(ValueError, match="outside the planned 2 steps"):
        state.begin_step(2)


def test_skip_cache_rejects_unfit_models():
    with pytest.raises(ValueError, match="needs a model with long skips"):
        SkipCache().check_model(tiny_model(long_skip=False))
    with pytest.raises(ValueError, match="b <= 2"):
        SkipCache(branch=3).check_model(tiny_model())


SAMPLING = Sampling(steps=12, guidance_scale=3.0)
SAMPLE = dict(seeds=[0, 1], condition=[1, 2], sampling=SAMPLING)


def test_interval_one_is_bit_identical_to_no_cache(skip_model):
    plain = generate(skip_model, **SAMPLE)
    cached = generate(skip_model, cache="skip:N=1,b=1", **SAMPLE)
    assert torch.equal(plain.samples, cached.samples)
    assert cached.stats == plain.stats and plain.stats.cached_steps == 0 and plain.stats.unit_evals == 12 * 4


def test_cache_engages_and_reports(skip_model):
    plain = generate(skip_model, **SAMPLE)
    cached = generate(skip_model, cache="skip:N=3,b=1", **SAMPLE)
    assert not torch.equal(plain.samples, cached.samples)
    assert (cached.stats.full_steps, cached.stats.cached_steps) == (4, 8)
    assert cached.stats.unit_evals == 4 * 4 + 8 * 2
    assert cached.cache == "skip:N=3,b=1,start=none,stop=none"


def test_blocks_run_match_the_plan():
    model = tiny_model(depth=8)
    calls = [0] * 8
    for k, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    out = generate(model, cache="skip:N=2,b=1", **SAMPLE)
    cached = out.stats.cached_steps
    assert cached == 6 and calls == [12] + [12 - cached] * 6 + [12]  # blocks 0 and 7 run on every step
    calls[:] = [0] * 8
    out = generate(model, cache="c2i:N=2", **SAMPLE)
    # b = 4 of 8 blocks at each end: every block runs at every step, the deep half from the kept state
    assert out.stats.cached_steps == 6 and calls == [12] * 8


def test_no_state_leaks_between_runs(skip_model):
    first = generate(skip_model, cache="skip:N=3,b=1", **SAMPLE)

    def stop_early(k, x, x0):
        if k == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(skip_model, cache="skip:N=3,b=1", callback=stop_early, **SAMPLE)
    again = generate(skip_model, cache="skip:N=3,b=1", **SAMPLE)
    assert torch.equal(first.samples, again.samples)


def test_two_pass_guidance_keeps_one_cache_step_per_denoising_step(skip_model):
    batched = generate(skip_model, cache="skip:N=2,b=1", **SAMPLE)
    two_pass = generate(skip_model, [0, 1], [1, 2], sampling=SAMPLING.replace(batched_guidance=False),
                        cache="skip:N=2,b=1")
    # Batch size changes the CPU matmul kernels, so the uncached runs already differ by ~3e-4 after
    # 12 guided DDPM steps; a cond/uncond mix-up of the kept state would be orders larger.
    assert batched.samples.abs().max() > 1
    torch.testing.assert_close(batched.samples, two_pass.samples, atol=2e-3, rtol=0)
    assert batched.stats == two_pass.stats
