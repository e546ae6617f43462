"""The middle layer's contracts: typed per-branch cache state, one source of sampling defaults, a generate()
that leaves the caller's model as it found it, and adapters that implement the model protocol."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import skipdit
from skipdit.cache import BRANCHES, CachePolicy, CacheState, parse_cache
from skipdit.cache.families import CACHE_FAMILIES
from skipdit.cli import build_parser
from skipdit.errors import UserError
from skipdit.models import build_model
from skipdit.models.random import randomize_
from skipdit.protocol import protocol_problems
from skipdit.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, Condition, Runtime, Sampling, cycle, generate

SPECS = ["skip:N=2", "adaptive:threshold=0.05", "fora:N=2", "toca:N=2,ratio=0.3", "delta:N=2", "deepcache:N=2,b=1",
         "pab:spatial=2", "tgate:gate=2", "teacache:threshold=0.5", "fbc:threshold=0.3"]


@pytest.fixture(scope="module")
def skip_model():
    torch.manual_seed(0)
    return randomize_(build_model("DiT-S/2-skip", input_size=8, depth=4, hidden_size=32, num_heads=2, num_classes=3,
                                  in_channels=3)).eval()  # eval: no random label dropout


@pytest.fixture(scope="module")
def vanilla_model():
    torch.manual_seed(1)
    return randomize_(build_model("DiT-S/2", input_size=8, depth=4, hidden_size=32, num_heads=2, num_classes=3,
                                  in_channels=3)).eval()


def test_every_policy_has_a_state_dataclass_and_a_key_table():
    for family in CACHE_FAMILIES:
        policy = parse_cache(family)
        assert dataclasses.is_dataclass(policy.State), family
        assert isinstance(policy.State(), policy.State)
        assert policy.keys, family
        assert parse_cache(policy.spec()) == policy  # the key table reads back what spec() writes


def sample(model, spec, *, batched: bool, steps: int = 6, seeds=(0, 1)):
    return generate(model, seeds, [0, 2], sampling=Sampling(sampler="ddim", steps=steps, guidance_scale=3.0,
                                                             batched_guidance=batched), cache=spec)


@pytest.mark.parametrize("spec", ["skip:N=2", "adaptive:threshold=0.05", "teacache:threshold=0.5"])
def test_branches_key_the_state_not_call_order(skip_model, spec):
    """Two passes keep a state per branch, named cond and uncond; one batched call keeps one, named both."""
    states: list[CacheState] = []
    policy = parse_cache(spec)
    original = type(policy).start

    def recording_start(self, model, timesteps):
        state = original(self, model, timesteps)
        states.append(state)
        return state

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(policy), "start", recording_start)
        sample(skip_model, spec, batched=False)
        sample(skip_model, spec, batched=True)
    assert sorted(states[0].branches) == ["cond", "uncond"]
    assert list(states[1].branches) == ["both"]
    assert all(isinstance(s, policy.State) for s in states[0].branches.values())


class Alternating:
    """A sampler's model_fn that calls the model for cond and uncond in a different order on every step, and
    skips the uncond call on some steps: a pipeline whose calls per step vary."""

    def __init__(self, model, state, cond, uncond):
        self.model, self.state, self.cond, self.uncond, self.k = model, state, cond, uncond, 0

    def __call__(self, x, t, order):
        outs = {}
        for name in order:
            c = self.cond if name == "cond" else self.uncond
            outs[name] = self.model(x, t, c, cache=self.state.branch(name))
        return outs


@pytest.mark.parametrize("spec", ["skip:N=2", "fora:N=2", "toca:N=2,ratio=0.3", "deepcache:N=2,b=1", "delta:N=2"])
def test_call_order_and_count_do_not_matter(skip_model, vanilla_model, spec):
    """Each branch's outputs are the same whether the other branch runs before it, after it, or not at all."""
    model = vanilla_model if spec.split(":")[0] in ("delta", "deepcache") else skip_model
    policy = parse_cache(spec)
    timesteps = [900, 700, 500, 300, 100, 0]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    cond, uncond = torch.tensor([0, 1]), torch.tensor([3, 3])
    orders = [("cond", "uncond"), ("uncond", "cond"), ("cond",), ("uncond", "cond"), ("cond", "uncond"), ("cond",)]

    def run(order_of_step):
        state = policy.start(model, timesteps)
        fn = Alternating(model, state, cond, uncond)
        outs = []
        with torch.no_grad():
            for k, t in enumerate(timesteps):
                state.begin_step(k)
                outs.append(fn(x, torch.full((2,), t), order_of_step(k))["cond"])
        return torch.stack(outs)

    steady = run(lambda k: ("cond", "uncond"))
    torch.testing.assert_close(run(lambda k: orders[k]), steady, rtol=0, atol=0)
    torch.testing.assert_close(run(lambda k: ("cond",)), steady, rtol=0, atol=0)


def test_run_returns_what_it_did(skip_model):
    """A run-time policy says what it decided as run's second value; a static one returns its plan's step."""
    h = torch.randn(2, 16, 32)
    c = torch.randn(2, 32)
    for spec, decides in (("skip:N=2", False), ("fbc:threshold=1e9", True)):
        policy = parse_cache(spec)
        plan = policy.plan([900, 800, 700], skip_model.num_units)
        state = policy.State()
        with torch.no_grad():
            ran = [policy.run(skip_model, h, c, step, state)[1] for step in plan]
        if not decides:
            assert ran == plan
        else:  # a huge threshold: every step after the first reuses
            assert [r.full for r in ran] == [True, False, False]


def test_branch_names_are_checked(skip_model):
    state = parse_cache("skip:N=2").start(skip_model, [900, 800])
    assert set(BRANCHES) == {"cond", "uncond", "both"}
    with pytest.raises(ValueError, match="unknown guidance branch 'second'"):
        state.branch("second")


def test_generate_has_few_parameters_and_one_source_of_defaults():
    assert list(inspect.signature(generate).parameters) == [
        "model", "seeds", "condition", "sampling", "runtime", "cache", "vae", "callback"]
    assert Sampling().num_steps == DEFAULT_STEPS["ddpm"] == 250
    assert Sampling(sampler="ddim").num_steps == DEFAULT_STEPS["ddim"] == 50
    args = build_parser().parse_args(["sample"])
    # the CLI leaves what the user did not give to the library: None, or the dataclass's own default
    assert (args.steps, args.cfg_scale, args.sampler, args.eta, args.cfg_mode) == (
        None, None, Sampling.sampler, Sampling.eta, Sampling.guidance_mode)
    assert args.precision == Runtime.precision


def test_guidance_default_is_off_for_unconditional_models():
    conditional = build_model("DiT-S/2", input_size=8, depth=2, hidden_size=32, num_heads=2, num_classes=3)
    unconditional = build_model("Latte-S/2", input_size=8, depth=4, hidden_size=32, num_heads=2, num_classes=0,
                                num_frames=2)
    assert Sampling().guidance_for(conditional) == DEFAULT_GUIDANCE
    assert Sampling().guidance_for(unconditional) == 1.0
    with pytest.raises(UserError, match="needs a conditional model"):
        Sampling(guidance_scale=2.0).guidance_for(unconditional)


@pytest.mark.parametrize("fields, message", [
    (dict(sampler="lms"), "unknown sampler 'lms'"), (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=True), "steps must be an integer"), (dict(eta=float("nan")), "eta must be a finite number"),
    (dict(eta=0.5), "eta applies to the ddim sampler only"), (dict(guidance_scale=0.5), "guidance scale must be"),
    (dict(guidance_mode="half"), "unknown guidance mode"), (dict(respacing="ddim0"), "invalid respacing"),
    (dict(num_frames=0), "num_frames must be an integer >= 1"),
])
def test_sampling_refuses_bad_settings(fields, message):
    with pytest.raises(UserError, match=message):
        Sampling(**fields)


def test_runtime_refuses_bad_settings():
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        Runtime(precision="fp8")
    with pytest.raises(UserError, match="batch size must be an integer >= 1"):
        Runtime(batch_size=0)


def test_cycle():
    assert cycle([1, 2], 5) == [1, 2, 1, 2, 1]
    assert cycle(["a"], 2) == ["a", "a"]
    with pytest.raises(UserError):
        cycle([], 3)


def test_generate_leaves_the_model_as_it_found_it(skip_model):
    skip_model.train()
    before = {name: vars(module).copy().keys() for name, module in skip_model.named_modules()}
    generate(skip_model, [0], 1, sampling=Sampling(steps=2), cache="skip:N=2")
    assert skip_model.training  # its mode is restored
    after = {name: vars(module).copy().keys() for name, module in skip_model.named_modules()}
    assert before == after  # no flags or cache tensors left on any module
    skip_model.eval()


def test_condition_shorthands_are_equal(skip_model):
    settings = dict(sampling=Sampling(steps=3), cache="skip:N=2")
    a = generate(skip_model, [0, 1], [2, 1], **settings)
    b = generate(skip_model, [0, 1], Condition(labels=[2, 1]), **settings)
    assert torch.equal(a.samples, b.samples)


def test_policies_are_cache_policies():
    assert all(isinstance(parse_cache(spec), CachePolicy) for spec in SPECS)


def test_the_diffusers_peer_implements_the_protocol(vanilla_model):
    pytest.importorskip("diffusers")
    from skipdit.bench.diffusers_peers import DiffusersPeer

    peer = DiffusersPeer(vanilla_model, "none")
    assert protocol_problems(peer) == []
    assert (peer.task, peer.num_units, peer.num_classes, peer.has_long_skips) == ("c2i", 4, 3, False)
    assert len(list(peer.repeated_blocks())) == 4
    with pytest.raises(UserError, match="brings its own cache"):
        peer.run_units(None, None)


def test_generate_is_exported():
    assert skipdit.generate is generate and skipdit.Sampling is Sampling and skipdit.Condition is Condition
