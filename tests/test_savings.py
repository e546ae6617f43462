"""A cache plan that saves nothing is named, with its reason, in sample, sample-many and cache plan."""

from __future__ import annotations

import logging

import pytest

from skipdit.cache import CacheStats, parse_cache
from skipdit.cli import main
from skipdit.diffusion import GaussianDiffusion
from skipdit.savings import no_saving_reason, planned_stats

DDPM_8 = GaussianDiffusion.create("8").sampling_timesteps()


def _reason(spec: str, units: int = 8) -> str | None:
    policy = parse_cache(spec)
    stats = planned_stats(policy, DDPM_8, units)
    return None if stats is None else no_saving_reason(stats, policy)


def test_reasons_come_from_the_plan():
    assert _reason("c2i:N=2").startswith("b=4 reaches its 8 units")
    assert "b <= 3" in _reason("c2i:N=2")
    assert _reason("c2i:N=2", units=28) is None  # the official DiT-XL/2: b=4 of 28 units saves
    assert _reason("skip:N=2,b=3") is None
    assert _reason("skip:N=1") == "none of its 8 steps is cached (N=1 makes every step full)"
    assert _reason("fora:N=2") is None  # reuses sublayers inside units that still run
    assert _reason("teacache:threshold=0.1") is None  # decided at run time: the plan cannot tell
    ran_all = CacheStats(steps=4, full_steps=2, cached_steps=2, unit_evals=32, units_per_step=8)
    assert no_saving_reason(ran_all) == "its 2 cached steps still run all 8 units"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "saves nothing" in r.message]


@pytest.mark.parametrize("units, warned", [(8, True), (28, False)])
def test_cache_plan_warns(units, warned, caplog, capsys):
    assert main(["cache", "plan", "c2i:N=2", "--units", str(units), "--summary"]) == 0
    expected = ["warning: cache c2i:N=2 saves nothing on this model: b=4 reaches its 8 units: a cached step "
                "runs the 4 shallow and 4 deep units, which are all of them (b <= 3 would skip some)"]
    assert _warnings(caplog) == (expected if warned else [])
    assert ("ideal speed-up 1.00x" in capsys.readouterr().out) == warned


def test_sample_and_sample_many_warn_once(tmp_path, caplog, capsys):
    common = ["--seeds", "0", "--steps", "2", "--no-progress"]
    assert main(["sample", "--cache", "c2i:N=2", *common, "--out", str(tmp_path / "s")]) == 0
    assert len(_warnings(caplog)) == 1  # planned before the run; not repeated after it
    caplog.clear()
    assert main(["sample", "--cache", "skip:N=2", *common, "--out", str(tmp_path / "s")]) == 0
    assert _warnings(caplog) == []
    assert main(["sample-many", "--cache", "c2i:N=2", *common, "--out", str(tmp_path / "m")]) == 0
    assert [m.startswith("warning: cache c2i:N=2 saves nothing") for m in _warnings(caplog)] == [True]
    capsys.readouterr()
