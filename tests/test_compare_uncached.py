"""``sample --compare-uncached``: warm-up, then interleaved timed rounds; the printed speed-up is the
ratio of the medians; the outputs come from one run of each, which later rounds reproduce exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from skipdit import sample_job
from skipdit.cli import main
from skipdit.errors import UserError
from skipdit.timing import interleaved

# Fake seconds per timed round: ratio of medians 5/2 = 2.50, of means 17/7 = 2.43, first round 3.00,
# so only the median rule prints 2.50x.
CACHED = [1.0, 4.0, 2.0]
UNCACHED = [3.0, 5.0, 9.0]


def test_interleaved_runs_in_rounds_and_keeps_first_results():
    calls = []

    def run(name, seconds):
        def call():
            calls.append(name)
            return (name, len(calls), seconds[calls.count(name) - 1])
        return call

    timed = interleaved({"a": run("a", CACHED), "b": run("b", UNCACHED)}, 3, lambda r: r[2])
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert timed.first == {"a": ("a", 1, 1.0), "b": ("b", 2, 3.0)}
    assert timed.seconds == {"a": CACHED, "b": UNCACHED}
    assert timed.speedup("b", "a") == 2.5
    assert timed.round_speedups("b", "a") == [3.0, 1.25, 4.5]
    with pytest.raises(UserError, match="repeats"):
        interleaved({"a": run("a", CACHED)}, 0, lambda r: r[2])


@pytest.fixture
def recorded(monkeypatch):
    """``generate`` as ``sample`` calls it, recording every call and its outputs; timed calls get the fake
    seconds above in order, the warm-up (the first call of each kind) gets 0."""
    real = sample_job.generate
    calls: list[dict] = []
    clock = {"cached": iter(CACHED), "uncached": iter(UNCACHED)}

    def fake(model, seeds, condition=None, *, sampling, cache=None, **settings):
        out = real(model, seeds, condition, sampling=sampling, cache=cache, **settings)
        kind = "uncached" if cache is None else "cached"
        warm = not any(c["kind"] == kind for c in calls)  # compare_uncached warms each kind up first
        calls.append({"kind": kind, "warm_up": warm, "steps": sampling.num_steps, "seeds": list(seeds),
                      "images": out.images})
        return dataclasses.replace(out, seconds=0.0 if warm else next(clock[kind]))

    monkeypatch.setattr(sample_job, "generate", fake)
    return calls


def test_warm_up_then_interleaved_and_the_speedup_of_medians(recorded, tmp_path, capsys):
    argv = ["sample", "--cache", "skip:N=2", "--compare-uncached", "--seeds", "0-2", "--steps", "4",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    order = [("warm-up " if c["warm_up"] else "") + c["kind"] for c in recorded]
    assert order == ["warm-up cached", "warm-up uncached"] + ["cached", "uncached"] * 3
    assert all(c["seeds"] == [0, 1, 2] for c in recorded)  # warm-ups at the full batch too
    assert [c["steps"] for c in recorded] == [2, 2] + [4] * 6  # warm-ups take two steps
    for kind in ("cached", "uncached"):  # the samples are deterministic: one run of each stands for all
        timed = [c["images"] for c in recorded if c["kind"] == kind and not c["warm_up"]]
        assert all(torch.equal(timed[0], images) for images in timed[1:])
    out = capsys.readouterr().out
    assert "measured speed-up 2.50x (ratio of medians, per round 1.25x-4.50x;" in out
    assert "cached median 2.00s (1.00-4.00s), uncached median 5.00s (3.00-9.00s)" in out
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["speedup"] == 2.5
    assert (report["cached_seconds"], report["uncached_seconds"]) == (2.0, 5.0)
    assert report["timed_seconds"] == {"cached": CACHED, "uncached": UNCACHED}
    assert (tmp_path / "uncached" / "grid.png").is_file()


def test_repeats_is_checked_and_used(recorded, tmp_path, capsys):
    base = ["sample", "--cache", "skip:N=2", "--compare-uncached", "--seeds", "0", "--steps", "2",
            "--out", str(tmp_path), "--no-progress"]
    assert main([*base, "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
    assert recorded == []  # rejected before any model ran
    assert main([*base, "--repeats", "1"]) == 0
    assert [c["kind"] for c in recorded if not c["warm_up"]] == ["cached", "uncached"]
    assert "measured speed-up 3.00x (ratio of medians; ideal" in capsys.readouterr().out


def test_no_cache_line_without_a_cache(tmp_path, capsys):
    assert main(["sample", "--seeds", "0", "--steps", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("1 samples in ")  # no "cache None: ..." line
