"""Batch dependence, pinned: TeaCache, First-Block-Cache and adaptive Skip-Cache decide once per batch, so a
sample's output changes with its batch mates; static schedules (Skip-Cache) are per-sample. sample-many says so."""

import json

import numpy as np
import pytest
import torch

from skipdit import Sampling, generate
from skipdit.cache import parse_cache
from skipdit.cli import main
from skipdit.sample_many import batch_note

from .conftest import tiny_model


class RowwiseStack:
    """A stand-in for a model's unit stack whose every unit acts on each row alone (``h * 1.1`` per unit), so
    any difference between a row's outputs in two batches can only come from the policy's decisions."""

    num_units = 4
    has_long_skips = True

    def first_block_input(self, h, c):
        return h

    def run_units(self, h, c, start=0, end=None, skips=None):
        return h * 1.1 ** ((self.num_units if end is None else end) - start)


def _outputs(spec: str, mate_moves: bool) -> tuple[torch.Tensor, list[bool]]:
    """Row 0's output at each of 4 steps, and whether each step computed, for a batch of two rows: row 0 moves by
    1% a step; its mate by 1% too, or by 200% (``mate_moves``). Row 0's inputs are the same in both batches."""
    policy, model = parse_cache(spec), RowwiseStack()
    plan = policy.plan([999, 666, 333, 0], model.num_units)
    state = policy.State()
    outputs, computed = [], []
    for k, step in enumerate(plan):
        h = torch.ones(2, 8)
        h[0] *= 1.01**k
        h[1] *= 3.0**k if mate_moves else 1.01**k
        out, ran = policy.run(model, h, None, step, state)  # static policies do what the plan says
        outputs.append(out[0])
        computed.append(ran.full)
    return torch.stack(outputs), computed


@pytest.mark.parametrize("spec", ["teacache:threshold=0.1", "fbc:threshold=0.1", "adaptive:threshold=0.1,b=1,max=6"])
def test_a_batch_wise_policy_makes_a_sample_depend_on_its_batch_mates(spec):
    still, still_ran = _outputs(spec, mate_moves=False)
    moving, moving_ran = _outputs(spec, mate_moves=True)
    assert still_ran != moving_ran  # the mate's motion changed a decision taken for row 0 as well
    assert (still - moving).abs().max() > 1e-3  # and so row 0's output (float32 rounding here is ~1e-7)
    assert batch_note(spec) is not None and "decides per batch" in batch_note(spec)


def test_a_static_schedule_is_batch_independent():
    still, still_ran = _outputs("skip:N=2", mate_moves=False)
    moving, moving_ran = _outputs("skip:N=2", mate_moves=True)
    assert still_ran == moving_ran and torch.equal(still, moving)
    assert batch_note("skip:N=2") is None and batch_note(None) is None


def test_a_static_schedule_gives_a_seed_the_same_sample_whatever_its_mates():
    """Through the real sampler: seed 0 next to seed 1 or to seed 2 (same batch size, so the same kernels)."""
    model = tiny_model()
    sampling = Sampling(sampler="ddim", steps=6, guidance_scale=1.0)
    first, second = (generate(model, [0, mate], [0, 3], sampling=sampling, cache="skip:N=2").samples[0]
                     for mate in (1, 2))
    assert torch.allclose(first, second, atol=1e-5)


def test_sample_many_notes_a_batch_wise_cache(tmp_path, capsys):
    out = tmp_path / "tea"
    argv = ["sample-many", "--seeds", "0-3", "--sampler", "ddim", "--steps", "3", "--batch-size", "2",
            "--cache", "teacache:threshold=0.1", "--no-progress", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith("note: ")][0].count("--batch-size") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch_dependent"] is True and "decides per batch" in summary["note"]
    assert summary["settings"]["batch_size"] == 2
    assert np.load(out / "samples.npz")["arr_0"].shape == (4, 16, 16, 1)


def test_bench_marks_the_methods_that_decide_per_batch():
    from skipdit.bench.harness import select_methods

    marked = {m.label: m.batch_dependent for m in select_methods("skip,fora,teacache,fbc,adaptive,hf-fbc,hf-pab", 10)}
    assert marked["Skip-Cache (N=2)"] is False and marked["FORA (N=2)"] is False
    assert marked["diffusers PAB (defaults)"] is False and marked["diffusers FBC (threshold=0.05)"] is True
    assert all(v for k, v in marked.items() if k.startswith(("TeaCache", "First-Block-Cache", "Adaptive")))
