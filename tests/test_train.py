"""Training: config, EMA, stages, exact resume, DDP equivalence, checkpoints and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skipdit import load
from skipdit.cli import main
from skipdit.convert.checkpoint import STORAGE_KEY
from skipdit.convert.files import read_safetensors
from skipdit.models import PRESETS
from skipdit.train import export, load_config, train
from skipdit.train import loop as loop_module
from skipdit.train.checkpoint import checkpoint_path, list_checkpoints, prune_checkpoints
from skipdit.train.config import TrainConfig, from_dict
from skipdit.train.ema import make_ema, update_ema_
from skipdit.train.recipe import apply_stage

from .conftest import tiny_model

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

TINY_ARGS = {"hidden_size": 32, "depth": 2, "num_heads": 2}


def tiny_config(tmp_path, **changes) -> TrainConfig:
    base = dict(
        run_dir=str(tmp_path / "run"), model="DiT-S/4-skip", model_args=TINY_ARGS, data={"kind": "digits"},
        steps=6, global_batch=8, lr=1e-3, ema_decay=0.9, log_every=2, ckpt_every=2, seed=0, device="cpu",
    )
    return from_dict({**base, **changes})


def final_state(run_dir, key="model"):
    step, path = list_checkpoints(run_dir)[-1]
    return step, torch.load(path, weights_only=True)[key]


def assert_same_state(a: dict, b: dict, **tol):
    assert a.keys() == b.keys()
    for k in a:
        if tol:
            torch.testing.assert_close(a[k], b[k], **tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


# -- config ------------------------------------------------------------------------------------------
def test_config_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: DiT-S/4\nlr: 1e-4\ndata: {kind: digits}\n")
    cfg = load_config(path, ["lr=3e-4", "steps=10", "data.workers=2", "grad_clip=1", "adam_betas=[0.9, 0.95]"])
    assert (cfg.lr, cfg.steps, cfg.data.workers, cfg.grad_clip, cfg.adam_betas) == (3e-4, 10, 2, 1.0, (0.9, 0.95))
    assert isinstance(load_config(path).lr, float)  # YAML reads "1e-4" as a string


@pytest.mark.parametrize("sets, message", [
    (["lrr=1"], "unknown config key(s) lrr; valid: run_dir"),
    (["data.pth=x"], "unknown config key(s) data.pth"),
    (["steps=1.5"], "config key steps: expected int"),
    (["stage=half"], "stage must be one of full, skip-only"),
    (["grad_checkpointing=yes please"], "expected bool"),
    (["lr"], "--set takes key=value"),
])
def test_config_rejects_bad_keys_and_values(sets, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, ["data.kind=digits", *sets])


def test_dry_run_prints_the_resolved_config(capsys, tmp_path):
    args = ["train", "--set", "data.kind=digits", "--set", "lr=2e-4", "--run-dir", str(tmp_path), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0002" in out and f"run_dir: {tmp_path}" in out and not (tmp_path / "config.yaml").exists()


# -- EMA and stages ----------------------------------------------------------------------------------
def test_ema_update_is_the_formula():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(4.0)
    ema = make_ema(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -2.0]]))
        model.bias.fill_(0.0)
    update_ema_(ema, model, decay=0.75)
    # 0.75 * old + 0.25 * new
    assert torch.equal(ema.weight, torch.tensor([[1.5, 1.0]]))
    assert torch.equal(ema.bias, torch.tensor([3.0]))
    assert not any(p.requires_grad for p in ema.parameters())


def test_skip_only_stage_trains_only_the_long_skips(tmp_path):
    from skipdit import save

    pretrained = tiny_model(long_skip=True, input_size=16, in_channels=1, patch_size=4, depth=2)
    save(pretrained, tmp_path / "pretrained.safetensors")
    cfg = tiny_config(tmp_path, stage="skip-only", steps=3, model_args={"depth": 2},
                      init=str(tmp_path / "pretrained.safetensors"))
    train(cfg, progress=False)
    _, state = final_state(cfg.run_dir)
    initial = pretrained.state_dict()
    is_skip = lambda k: k.startswith(("skip_norms.", "skip_linears."))  # noqa: E731
    assert all(torch.equal(state[k], initial[k]) for k in state if not is_skip(k))
    assert all(not torch.equal(state[k], initial[k]) for k in state if is_skip(k))


def test_skip_only_needs_pretrained_weights(tmp_path):
    with pytest.raises(ValueError, match="stage skip-only trains the long skips of pretrained weights: set init"):
        train(tiny_config(tmp_path, stage="skip-only"), progress=False)


def test_apply_stage_picks_modules_not_names(skip_model, vanilla_model):
    params = apply_stage(skip_model, "skip-only")
    expected = {id(p) for m in (skip_model.skip_norms, skip_model.skip_linears) for p in m.parameters()}
    assert {id(p) for p in params} == expected
    assert len(apply_stage(skip_model, "full")) == sum(1 for _ in skip_model.parameters()) - 1  # all but pos_embed
    with pytest.raises(ValueError, match="needs a model with long skips"):
        apply_stage(vanilla_model, "skip-only")


# -- the loop --------------------------------------------------------------------------------------------
def test_loss_falls_on_digits_within_50_steps(tmp_path):
    cfg = tiny_config(tmp_path, model_args={"hidden_size": 64, "depth": 2, "num_heads": 2}, steps=50,
                      global_batch=32, lr=2e-3, log_every=10, ckpt_every=50)
    train(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 5
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = tiny_config(tmp_path / "a")
    train(straight, progress=False)

    killed = tiny_config(tmp_path / "b")
    calls = {"n": 0}
    real_update = loop_module.update_ema_

    def dies_in_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the step-4 checkpoint, before step 5 is saved: like a SIGKILL
            raise SystemExit("killed")
        real_update(*args, **kwargs)

    monkeypatch.setattr(loop_module, "update_ema_", dies_in_step_5)
    with pytest.raises(SystemExit):
        train(killed, progress=False)
    assert [s for s, _ in list_checkpoints(killed.run_dir)] == [2, 4]
    monkeypatch.setattr(loop_module, "update_ema_", real_update)
    train(killed, progress=False)  # the same config again: resumes at step 4
    for key in ("model", "ema", "opt"):
        step_a, a = final_state(straight.run_dir, key)
        step_b, b = final_state(killed.run_dir, key)
        assert step_a == step_b == 6
        if key == "opt":
            a, b = a["state"], b["state"]
            a = {f"{i}.{n}": v for i, s in a.items() for n, v in s.items()}
            b = {f"{i}.{n}": v for i, s in b.items() for n, v in s.items()}
        assert_same_state(a, b)
    lines = (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6]


def test_ctrl_c_saves_the_step_in_progress_under_its_own_number(tmp_path, monkeypatch):
    """Ctrl-C between the optimizer step and the step counter: the run finishes that step and saves it as
    step 3, with Adam's own step count 3 (tests/test_train_resume.py interrupts every point of a step)."""
    cfg = tiny_config(tmp_path, ckpt_every=100)
    calls = {"n": 0}
    real_update = loop_module.update_ema_

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the loop's handler only sets a flag
        real_update(*args, **kwargs)

    monkeypatch.setattr(loop_module, "update_ema_", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert [s for s, _ in list_checkpoints(cfg.run_dir)] == [3]
    payload = torch.load(checkpoint_path(cfg.run_dir, 3), weights_only=True)
    assert payload["step"] == 3
    assert all(int(state["step"]) == 3 for state in payload["opt"]["state"].values())
    assert calls["n"] == 3  # no step after the interrupted one ran


def test_sigterm_saves_the_finished_steps(tmp_path):
    cfg = tiny_config(tmp_path, steps=100_000, ckpt_every=100_000, log_every=1)
    script = ("from skipdit.train import train; from skipdit.train.config import from_dict; import json, sys; "
              "train(from_dict(json.loads(sys.argv[1])), progress=False)")
    config = json.dumps({**cfg.to_dict(), "adam_betas": list(cfg.adam_betas)})
    proc = subprocess.Popen([sys.executable, "-c", script, config], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = Path(cfg.run_dir) / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    steps = [s for s, _ in list_checkpoints(cfg.run_dir)]
    assert len(steps) == 1 and steps[0] >= 3, err
    assert f"interrupted: saved step {steps[0]}" in err


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    straight = tiny_config(tmp_path / "a")
    train(straight, progress=False)
    cfg = tiny_config(tmp_path / "b", steps=4)
    train(cfg, progress=False)
    newest = checkpoint_path(cfg.run_dir, 4)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a failing disk
    train(cfg.replace(steps=6), progress=False)
    assert "ckpt-0000004.pt is unreadable" in caplog.text
    assert_same_state(final_state(straight.run_dir)[1], final_state(cfg.run_dir)[1])


def test_all_checkpoints_corrupt_is_an_error_and_keeps_the_files(tmp_path):
    cfg = tiny_config(tmp_path, steps=2)
    train(cfg, progress=False)
    path = checkpoint_path(cfg.run_dir, 2)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        train(cfg.replace(steps=4), progress=False)
    assert path.read_bytes() == b"garbage"


def test_resuming_another_architecture_is_refused(tmp_path, capsys):
    cfg = tiny_config(tmp_path, steps=2)
    train(cfg, progress=False)
    before = checkpoint_path(cfg.run_dir, 2).read_bytes()
    args = ["train", "--run-dir", cfg.run_dir, "--set", "data.kind=digits", "--set", "model=DiT-S/4-skip",
            "--set", "model_args={hidden_size: 64, depth: 2, num_heads: 2}", "--set", "steps=4", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a run of another architecture (hidden_size: 32 -> 64)" in err and err.count("\n") == 1
    assert checkpoint_path(cfg.run_dir, 2).read_bytes() == before


def test_prune_keeps_the_newest_and_the_snapshots(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (100, 200, 300, 400, 500):
        (folder / f"ckpt-{step:07d}.pt").write_bytes(b"x")
    prune_checkpoints(tmp_path, keep_last=2, snapshot_every=200)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [200, 400, 500]


@pytest.mark.parametrize("setting, message", [
    (["data.kind=image-folder", "data.path=/no/such/folder", "data.image_size=16"], "data path not found"),
    (["data.kind=latents", "data.path=/no/such/folder"], "no latent shards"),
    (["data.kind=image-folder", "data.image_size=16"], "data.path is required"),
    (["global_batch=6", "micro_batch=4"], "micro_batch 4 does not divide"),
    (["model_args={in_channels: 3}"], "model_args do not fit the data: in_channels=3 (data: 1)"),
])
def test_bad_data_and_batching_fail_with_one_line(tmp_path, capsys, setting, message):
    args = ["train", "--run-dir", str(tmp_path / "run"), "--set", "data.kind=digits", "--set", "model=DiT-S/4",
            "--no-progress"] + [a for s in setting for a in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_empty_image_folder_is_refused(tmp_path, capsys):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    args = ["train", "--run-dir", str(tmp_path / "run"), "--set", "data.kind=image-folder", "--set",
            f"data.path={tmp_path / 'data'}", "--set", "data.image_size=16", "--no-progress"]
    assert main(args) == 2
    assert "no images in" in capsys.readouterr().err


def test_micro_batches_accumulate_to_the_same_step(tmp_path):
    whole = tiny_config(tmp_path / "a", steps=2, ckpt_every=2)
    split = tiny_config(tmp_path / "b", steps=2, ckpt_every=2, micro_batch=2)
    train(whole, progress=False)
    train(split, progress=False)
    assert_same_state(final_state(whole.run_dir)[1], final_state(split.run_dir)[1], atol=1e-6, rtol=1e-5)


def test_gradient_checkpointing_and_bf16_train(tmp_path):
    plain = tiny_config(tmp_path / "a", steps=2)
    ckpt = tiny_config(tmp_path / "b", steps=2, grad_checkpointing=True)
    train(plain, progress=False)
    train(ckpt, progress=False)
    assert_same_state(final_state(plain.run_dir)[1], final_state(ckpt.run_dir)[1], atol=1e-6, rtol=1e-5)
    bf16 = tiny_config(tmp_path / "c", steps=2, precision="bf16")
    train(bf16, progress=False)
    record = json.loads((tmp_path / "c" / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert torch.isfinite(torch.tensor(record["loss"]))


# -- init, export ------------------------------------------------------------------------------------------
def test_init_from_a_vanilla_checkpoint_adds_new_skips(tmp_path):
    from skipdit import save

    vanilla = tiny_model(long_skip=False, input_size=16, in_channels=1, patch_size=4, depth=2)
    save(vanilla, tmp_path / "vanilla.safetensors")
    cfg = tiny_config(tmp_path, model="DiT-S/4-skip", model_args={"depth": 2, "skip_init": "zero"},
                      init=str(tmp_path / "vanilla.safetensors"), stage="skip-only", steps=2)
    train(cfg, progress=False)
    _, state = final_state(cfg.run_dir)
    for key, value in vanilla.state_dict().items():
        assert torch.equal(state[key], value), key  # skip-only: the pretrained blocks are untouched
    assert state["skip_linears.0.linear.weight"].abs().sum() > 0  # zero-initialised, then trained

    stage2 = tiny_model(long_skip=True, input_size=16, in_channels=1, patch_size=4, depth=2)
    loop_module._load_init(stage2, str(checkpoint_path(cfg.run_dir, 2)))  # stage 2 starts from the raw weights
    assert_same_state(stage2.state_dict(), state)


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/**/*.yaml")), ids=str)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model in PRESETS


def test_export_writes_the_ema_weights(tmp_path, capsys):
    cfg = tiny_config(tmp_path, steps=2)
    train(cfg, progress=False)
    assert main(["export", cfg.run_dir, "--out", str(tmp_path / "m.safetensors")]) == 0
    model = load(tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors alone makes 0600
    _, ema = final_state(cfg.run_dir, "ema")
    assert_same_state(model.state_dict(), ema)
    assert main(["export", cfg.run_dir, "--step", "7"]) == 2
    assert "no checkpoint for step 7" in capsys.readouterr().err
    assert export(cfg.run_dir).name == "ema-0000002.safetensors"


def test_export_in_bf16_halves_the_file_and_loads_as_float32(tmp_path):
    cfg = tiny_config(tmp_path, steps=2)
    train(cfg, progress=False)
    assert main(["export", cfg.run_dir, "--out", str(tmp_path / "full.safetensors")]) == 0
    assert main(["export", cfg.run_dir, "--storage", "bf16", "--out", str(tmp_path / "half.safetensors")]) == 0
    full, half = (tmp_path / "full.safetensors").stat().st_size, (tmp_path / "half.safetensors").stat().st_size
    assert half < 0.55 * full
    _, metadata = read_safetensors(tmp_path / "half.safetensors")
    assert metadata[STORAGE_KEY] == "bf16"
    model = load(tmp_path / "half.safetensors")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, ema = final_state(cfg.run_dir, "ema")
    assert_same_state(model.state_dict(), {k: v.bfloat16().float() for k, v in ema.items()})  # exact, widened
    with pytest.raises(ValueError, match="unknown storage dtype 'int8'"):
        export(cfg.run_dir, storage="int8")


def test_a_training_checkpoint_loads_with_its_architecture(tmp_path):
    # the head count is in no tensor shape: it must come from the checkpoint's model_config
    cfg = tiny_config(tmp_path, steps=2, model_args={**TINY_ARGS, "num_heads": 4})
    train(cfg, progress=False)
    model = load(checkpoint_path(cfg.run_dir, 2))
    assert model.config.num_heads == 4 and model.config.input_size == 16
    assert_same_state(model.state_dict(), final_state(cfg.run_dir, "ema")[1])


# -- DDP -------------------------------------------------------------------------------------------------------
def test_two_gloo_processes_match_one_process(tmp_path):
    one = tiny_config(tmp_path / "one", steps=3, ckpt_every=3)
    train(one, progress=False)
    config = tmp_path / "ddp.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'two' / 'run'}\nmodel: DiT-S/4-skip\nmodel_args: {json.dumps(TINY_ARGS)}\n"
        "data: {kind: digits}\nsteps: 3\nglobal_batch: 8\nlr: 1.0e-3\nema_decay: 0.9\nlog_every: 3\n"
        "ckpt_every: 3\nseed: 0\ndevice: cpu\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "skipdit", "train", "--config", str(config), "--no-progress"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for key in ("model", "ema"):
        assert_same_state(final_state(one.run_dir, key)[1], final_state(Path(tmp_path / "two" / "run"), key)[1],
                          atol=1e-6, rtol=1e-5)
