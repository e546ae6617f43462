import json

import pytest
import torch

from skipdit import save
from skipdit.analysis import (
    fusion_map,
    make_probe,
    perturbation_directions,
    perturbation_landscape,
    power_iteration,
    unit_spectral_norms,
)
from skipdit.cli import main

from .conftest import tiny_model


def test_landscape_grid_centre_is_one_and_values_are_cosines(skip_model):
    probe = make_probe(skip_model, t=500, batch=3, seed=1)
    result = perturbation_landscape(skip_model, probe, grid=5, radius=0.5, seed=2, chunk=7)
    assert result.cosine.shape == (5, 5)
    assert result.alphas == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert result.cosine[2, 2].item() == pytest.approx(1.0, abs=1e-6)
    assert ((result.cosine >= -1 - 1e-9) & (result.cosine <= 1 + 1e-9)).all()
    assert result.min <= result.mean <= 1 + 1e-9
    assert result.min < 1 - 1e-6  # a radius of 0.5 must move the features


def test_directions_are_orthogonal_and_scaled_to_the_input():
    x = torch.randn(4, 3, 8, 8) * torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)
    d1, d2 = perturbation_directions(x, radius=0.1, seed=0)
    norms = 0.1 * x.flatten(1).norm(dim=1)
    torch.testing.assert_close(d1.flatten(1).norm(dim=1), norms)
    torch.testing.assert_close(d2.flatten(1).norm(dim=1), norms)
    assert (d1.flatten(1) * d2.flatten(1)).sum(1).abs().max() < 1e-4 * norms.max() ** 2


def test_noise_inputs_are_shared_and_trajectory_starts_from_them(skip_model, vanilla_model):
    a = make_probe(skip_model, t=300, batch=2, seed=5)
    b = make_probe(vanilla_model, t=300, batch=2, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.t.tolist() == [300, 300]
    start = make_probe(skip_model, t=999, batch=2, seed=5, inputs="trajectory")
    assert torch.equal(start.x, a.x)  # no DDIM step down to t = 999
    moved = make_probe(skip_model, t=300, batch=2, seed=5, inputs="trajectory", steps=2)
    assert moved.x.shape == a.x.shape and torch.isfinite(moved.x).all() and not torch.equal(moved.x, a.x)


def test_power_iteration_matches_the_spectral_norm_of_linear_maps():
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(2, 7, 7, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(2, 5, 5, generator=gen, dtype=torch.float64))
    s = torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.1], [0.7, 0.6, 0.2, 0.1, 0.0]], dtype=torch.float64)
    known = u[:, :, :5] @ torch.diag_embed(s) @ v.transpose(1, 2)  # (2, 7, 5), sigma_max 3 and 0.7
    random = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64)
    for matrices, iters in ((known, 20), (random, 300)):
        x = torch.randn(2, 5, dtype=torch.float64)
        sigma = power_iteration(lambda z, m=matrices: torch.einsum("nij,nj->ni", m, z), x, iters=iters, seed=3)
        torch.testing.assert_close(sigma, torch.linalg.matrix_norm(matrices, ord=2), rtol=1e-3, atol=0)


def test_power_iteration_on_a_unit_matches_the_full_jacobian():
    model = tiny_model(long_skip=False, input_size=4, hidden_size=64, num_heads=2).double()
    probe = make_probe(model, t=400, batch=2, seed=0)
    with torch.no_grad():
        h, c = model.embed(probe.x, probe.t, probe.y)  # (2, 4, 64)
    sigma = power_iteration(lambda z: model.unit(1, z, c), h, iters=200, seed=0)
    for k in range(2):  # each sample's block of the (block-diagonal) Jacobian, computed in full
        jac = torch.autograd.functional.jacobian(lambda z, k=k: model.unit(1, z, c[k:k + 1]), h[k:k + 1])
        exact = torch.linalg.matrix_norm(jac.reshape(h[0].numel(), h[0].numel()), ord=2)
        assert sigma[k].item() == pytest.approx(exact.item(), rel=1e-3)


@pytest.mark.parametrize("long_skip", [True, False])
def test_unit_spectral_norms_cover_every_unit(long_skip):
    model = tiny_model(long_skip=long_skip)
    result = unit_spectral_norms(model, make_probe(model, batch=2, seed=0), iters=3, seed=0)
    assert result.num_units == model.num_units == 4 and result.block.shape == (4, 2)
    assert (result.block > 0).all() and (result.stack > 0).all()
    deep = [row is not None for row in result.fused]
    assert deep == ([False, False, True, True] if long_skip else [False] * 4)
    assert all((row > 0).all() for row in result.fused + result.fusion if row is not None)
    report = result.to_dict()
    assert len(report["block"]["mean"]) == 4 and report["fused"]["mean"][0] is None


def test_fusion_map_is_the_fusion_of_the_models_own_unit_loop(skip_model, vanilla_model):
    probe = make_probe(skip_model, batch=2, seed=0)
    half = skip_model.num_units // 2
    with torch.no_grad():
        h, ctx = skip_model.embed(probe.x, probe.t, probe.y)
        skips = []
        h = skip_model.run_units(h, ctx, 0, half, skips)
        for i in range(half, skip_model.num_units):
            skip = skips[-1]
            fused = skip_model.unit(i, fusion_map(skip_model, i, skip)(h), ctx)
            assert torch.equal(fused, skip_model.run_units(h, ctx, i, i + 1, [skip]))
            h = skip_model.run_units(h, ctx, i, i + 1, skips)
    for model, unit in ((skip_model, half - 1), (vanilla_model, half)):
        with pytest.raises(ValueError, match="fuses no long skip"):
            fusion_map(model, unit, h)


@pytest.fixture
def ckpts(tmp_path):
    return (str(save(tiny_model(long_skip=True), tmp_path / "skip.safetensors")),
            str(save(tiny_model(long_skip=False, seed=1), tmp_path / "dit.safetensors")))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_landscape_and_spectral_write_png_and_json(tmp_path, capsys, ckpts):
    skip, dit = ckpts
    out_dir = tmp_path / "analysis"
    models = ["--model", skip, "--baseline-model", dit, "--device", "cpu", "--out", out_dir]
    code, out, _ = run_cli(capsys, "analyze", "landscape", *models, "--t", 500, "--grid", 3, "--batch", 2)
    assert code == 0 and "min cos" in out
    report = json.loads((out_dir / "landscape.json").read_text())
    assert list(report["models"]) == [dit, skip]
    assert len(report["models"][skip]["cosine"]) == 3 and report["settings"]["radius"] == 0.05
    code, out, _ = run_cli(capsys, "analyze", "spectral", *models, "--iters", 2, "--batch", 1,
                           "--inputs", "trajectory", "--steps", 2)
    assert code == 0 and "whole stack" in out
    report = json.loads((out_dir / "spectral.json").read_text())
    assert report["models"][skip]["long_skip"] and len(report["models"][dit]["block"]["mean"]) == 4
    for name in ("landscape.png", "spectral.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out_dir.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("args, message", [
    (["landscape", "--grid", "4"], "grid must be an odd integer"),
    (["landscape", "--radius", "0"], "radius must be a positive number"),
    (["spectral", "--t", "1000"], "t must be an integer timestep"),
    (["spectral", "--iters", "0"], "iters must be a positive integer"),
    (["spectral", "--baseline-model", "{skip}"], "nothing to compare"),
    (["spectral", "--model", "{missing}"], "missing"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, ckpts, args, message):
    skip, dit = ckpts
    base = ["--model", skip, "--baseline-model", dit, "--device", "cpu", "--out", tmp_path / "o"]
    fill = {"skip": skip, "missing": str(tmp_path / "missing.safetensors")}
    code, _, err = run_cli(capsys, "analyze", *[a.format(**fill) for a in args[:1]], *base,
                           *[a.format(**fill) for a in args[1:]])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
