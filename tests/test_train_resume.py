"""Interrupted training resumes exactly, and checkpoints are verified and never lost.

- A signal (SIGINT, SIGTERM) at any point of a step stops the run after that step. The checkpoint it
  saves equals an uninterrupted run's state at that step, and the resumed run ends bit-identical to the
  uninterrupted one: model, EMA and optimizer state (every tensor, ``torch.equal``) and every log value.
- A real process SIGKILLed at random times (and once inside a checkpoint write), then rerun with the same
  command, ends bit-identical too, with no temporary file left.
- Under DDP the processes agree on a signal that only one of them got, and stop after the same step.
- Flipped bytes, empty, truncated and garbled checkpoints are caught on resume and on export; the previous
  good checkpoint is used, and rotation never deletes the newest verified one.
"""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skipdit.diffusion import GaussianDiffusion
from skipdit.train import checkpoint as ckpt_module
from skipdit.train import export, train
from skipdit.train import loop as loop_module
from skipdit.train.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    payload_digest,
    prune_checkpoints,
    read_training_checkpoint,
    save_checkpoint,
    stale_temporaries,
)
from skipdit.train.config import from_dict
from skipdit.train.loop import TrainingInterrupted

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")

TINY_ARGS = {"hidden_size": 32, "depth": 2, "num_heads": 2}
STEPS = 6
LOG_KEYS = ("step", "loss", "mse", "vb", "grad_norm", "lr")  # all but samples_per_sec, which is a timing


def tiny_config(root: Path, **changes):
    # log_every=1: each record covers one step, so a resumed run's log must equal the uninterrupted one's
    base = dict(
        run_dir=str(root / "run"), model="DiT-S/4-skip", model_args=TINY_ARGS, data={"kind": "digits"},
        steps=STEPS, global_batch=8, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=2, seed=0, device="cpu",
    )
    return from_dict({**base, **changes})


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """``references(**changes)``: an uninterrupted run that keeps a checkpoint of every step, as
    ({step: payload}, log records); one run per set of changes."""
    cache = {}

    def get(**changes):
        key = json.dumps(changes, sort_keys=True)
        if key not in cache:
            cfg = tiny_config(tmp_path_factory.mktemp("reference"), **changes, ckpt_every=1, keep_last=STEPS)
            train(cfg, progress=False)
            states = {s: torch.load(p, weights_only=True) for s, p in list_checkpoints(cfg.run_dir)}
            assert sorted(states) == list(range(1, STEPS + 1))
            cache[key] = states, log_records(cfg.run_dir)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def reference(references):
    return references()


def log_records(run_dir) -> list[dict]:
    lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
    return [{k: json.loads(line)[k] for k in LOG_KEYS} for line in lines]


def assert_identical(a, b, where="payload"):
    """Bit for bit: every tensor torch.equal (and the same dtype and shape), every other value ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_state_equals(payload: dict, expected: dict):
    assert payload["step"] == expected["step"]
    for key in ("model", "ema", "opt"):  # opt: Adam's exp_avg, exp_avg_sq and step per parameter, the groups
        assert_identical(payload[key], expected[key], key)


def newest(run_dir) -> tuple[int, dict]:
    step, path = list_checkpoints(run_dir)[-1]
    return step, torch.load(path, weights_only=True)


def send(sig=signal.SIGINT):
    """Deliver a real signal to this process, as a terminal's Ctrl-C or ``kill`` would."""
    handler = signal.getsignal(sig)
    # without the loop's handler, SIGINT would raise KeyboardInterrupt here and stop the whole pytest session
    assert handler not in (signal.default_int_handler, signal.SIG_DFL, None), f"no {sig.name} handler installed"
    os.kill(os.getpid(), sig)


# -- signals at every point of a step ------------------------------------------------------------------------
def after_calls(monkeypatch, owner, name, at: int, *, before: bool = True, sigs=(signal.SIGINT,)):
    """Wrap ``owner.name`` so that its ``at``-th call delivers ``sigs`` before (or after) doing its work."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        hit = calls["n"] == at
        if hit and before:
            for sig in sigs:
                send(sig)
        out = real(*args, **kwargs)
        if hit and not before:
            for sig in sigs:
                send(sig)
        return out

    monkeypatch.setattr(owner, name, wrapped)
    return calls


# (where in the step, what to wrap, which call, before/after the call, config changes, the step that is saved)
# training_losses runs once per micro-batch, clip_grad_norm_ after the last backward, update_ema_ right after
# optimizer.step() and before the step counter, _Meter.flush when the log line is written (every step here),
# save_checkpoint / prune_checkpoints at the steps of ckpt_every=2.
POINTS = {
    "before the forward pass, step 1": (GaussianDiffusion, "training_losses", 1, True, {}, 1),
    "before the forward pass, step 3": (GaussianDiffusion, "training_losses", 3, True, {}, 3),
    "between two micro-batches, step 3": (GaussianDiffusion, "training_losses", 6, True, {"micro_batch": 4}, 3),
    "after backward, before clipping and the optimizer, step 3": (torch.nn.utils, "clip_grad_norm_", 3, True, {}, 3),
    "after the optimizer step, before the EMA, step 3": (loop_module, "update_ema_", 3, True, {}, 3),
    "after the optimizer step and the EMA, before step += 1, step 3": (loop_module, "update_ema_", 3, False, {}, 3),
    "after the optimizer step and the EMA, before step += 1, step 4": (loop_module, "update_ema_", 4, False, {}, 4),
    "while writing the log line, step 5": (loop_module._Meter, "flush", 5, True, {}, 5),
    "while saving the step-4 checkpoint": (loop_module, "save_checkpoint", 2, True, {}, 4),
    "while rotating checkpoints after step 4": (loop_module, "prune_checkpoints", 2, True, {}, 4),
    "while saving the last checkpoint": (loop_module, "save_checkpoint", 3, True, {}, 6),
    "after the last optimizer step": (loop_module, "update_ema_", 6, False, {}, 6),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_signal_anywhere_in_a_step_stops_after_it_and_resumes_exactly(tmp_path, monkeypatch, references, point):
    owner, name, at, before, changes, saved_step = POINTS[point]
    states, records = references(**changes)
    cfg = tiny_config(tmp_path, **changes)
    after_calls(monkeypatch, owner, name, at, before=before)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, progress=False)
    assert stopped.value.step == saved_step and stopped.value.signal_name == "SIGINT"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    # the checkpoint of the interruption holds exactly the steps its name says
    step, payload = newest(cfg.run_dir)
    assert step == saved_step
    assert_state_equals(payload, states[saved_step])
    assert payload["checksum"]["digest"] == payload_digest(payload)

    monkeypatch.undo()
    train(cfg, progress=False)  # the same command again
    step, payload = newest(cfg.run_dir)
    assert step == STEPS
    assert_state_equals(payload, states[STEPS])
    assert log_records(cfg.run_dir) == records
    assert not stale_temporaries(cfg.run_dir)


def test_sigterm_stops_at_the_step_boundary_too(tmp_path, monkeypatch, reference):
    states, records = reference
    cfg = tiny_config(tmp_path)
    after_calls(monkeypatch, loop_module, "update_ema_", 3, before=False, sigs=(signal.SIGTERM,))
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, progress=False)
    assert (stopped.value.step, stopped.value.signal_name) == (3, "SIGTERM")
    assert_state_equals(newest(cfg.run_dir)[1], states[3])
    monkeypatch.undo()
    train(cfg, progress=False)
    assert_state_equals(newest(cfg.run_dir)[1], states[STEPS])
    assert log_records(cfg.run_dir) == records


def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path, monkeypatch, reference, caplog):
    states, records = reference
    cfg = tiny_config(tmp_path)
    # two Ctrl-C right after step 3's optimizer step: the run stops mid-step, and must not save that state
    after_calls(monkeypatch, loop_module, "update_ema_", 3, before=True, sigs=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(cfg, progress=False)
    assert not isinstance(stopped.value, TrainingInterrupted)
    assert "aborted without saving: run the same command to continue from step 2" in caplog.text
    assert [s for s, _ in list_checkpoints(cfg.run_dir)] == [2]
    monkeypatch.undo()
    train(cfg, progress=False)
    assert_state_equals(newest(cfg.run_dir)[1], states[STEPS])
    assert log_records(cfg.run_dir) == records


def test_a_signal_during_setup_ends_the_run_before_any_step(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    real = loop_module.build_data

    def interrupted(*args, **kwargs):
        send(signal.SIGTERM)  # the setup's handler turns SIGTERM into KeyboardInterrupt: nothing to save yet
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "build_data", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


# -- a real process, SIGKILLed ---------------------------------------------------------------------------------
KILL_IN_SAVE = """
import os, signal, sys
import skipdit.train.checkpoint as c
real = c.torch.save
def save(obj, f, *args, **kwargs):  # write the whole file, then die before it is renamed: a kill mid-write
    real(obj, f, *args, **kwargs)
    if obj["step"] == int(os.environ["KILL_AT_SAVE"]):
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
c.torch.save = save
from skipdit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_at_random_times_then_the_same_command_ends_bit_identical(tmp_path):
    steps = 24
    config = tmp_path / "train.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\nmodel: DiT-S/4-skip\nmodel_args: {json.dumps(TINY_ARGS)}\n"
        f"data: {{kind: digits}}\nsteps: {steps}\nglobal_batch: 8\nlr: 1.0e-3\nema_decay: 0.9\nlog_every: 1\n"
        "ckpt_every: 2\nseed: 0\ndevice: cpu\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILL_IN_SAVE, "train", "--config", str(config), "--no-progress"]
    run_dir, log = tmp_path / "run", tmp_path / "run" / "log.jsonl"

    # 1. killed inside the write of checkpoint 4: a temporary file is left, checkpoint 2 is the newest
    done = subprocess.run(command, env={**env, "KILL_AT_SAVE": "4"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert [s for s, _ in list_checkpoints(run_dir)] == [2] and len(stale_temporaries(run_dir)) == 1

    # 2. killed at seeded-random moments: a random number of steps into the run, plus up to one step more
    rng = random.Random(14)
    for _ in range(2):
        proc = subprocess.Popen(command, env={**env, "KILL_AT_SAVE": "-1"}, stderr=subprocess.PIPE, text=True)
        lines = lambda: len(log.read_text().splitlines()) if log.exists() else 0  # noqa: E731
        target = min(steps - 2, lines() + rng.randint(2, 6))
        deadline = time.time() + 120
        while lines() < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.08))
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]

    # 3. the same command to the end
    done = subprocess.run(command, env={**env, "KILL_AT_SAVE": "-1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not stale_temporaries(run_dir)
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.endswith(".pt")]

    # an uninterrupted run with the same thread count (in this process, one thread like the child processes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = from_dict({**from_dict_yaml(config), "run_dir": str(tmp_path / "straight")})
        train(straight, progress=False)
    finally:
        torch.set_num_threads(threads)
    step, payload = newest(run_dir)
    assert step == steps
    assert_state_equals(payload, newest(straight.run_dir)[1])
    assert log_records(run_dir) == log_records(straight.run_dir)


def from_dict_yaml(path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


# -- DDP: one process gets the signal, all stop after the same step ----------------------------------------------
DDP_SCRIPT = """
import json, os, signal, sys
from skipdit.train import loop, train
from skipdit.train.config import from_dict
real, calls = loop.update_ema_, {"n": 0}
def update(*args, **kwargs):
    real(*args, **kwargs)
    calls["n"] += 1
    if calls["n"] == 3 and os.environ["RANK"] == "1":  # only rank 1, after step 3's optimizer step
        os.kill(os.getpid(), signal.SIGTERM)
loop.update_ema_ = update
try:
    train(from_dict(json.loads(sys.argv[1])), progress=False)
except loop.TrainingInterrupted as stop:
    print(f"rank {os.environ['RANK']} stopped after step {stop.step}", flush=True)
    sys.exit(130)
"""


def test_ddp_processes_agree_to_stop_after_the_same_step(tmp_path, reference):
    states, _ = reference
    cfg = tiny_config(tmp_path, ckpt_every=100)
    script = tmp_path / "ddp_stop.py"
    script.write_text(DDP_SCRIPT)
    config = json.dumps({**cfg.to_dict(), "adam_betas": list(cfg.adam_betas)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), config]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    assert "rank 0 stopped after step 3" in out and "rank 1 stopped after step 3" in out, out[-3000:]
    assert out.count("interrupted: saved step 3") == 1  # said once, by rank 0
    assert [s for s, _ in list_checkpoints(cfg.run_dir)] == [3]
    payload = read_training_checkpoint(checkpoint_path(cfg.run_dir, 3))
    for key in ("model", "ema"):  # two processes compute the single-process step up to float rounding
        for name, value in payload[key].items():
            torch.testing.assert_close(value, states[3][key][name], atol=1e-6, rtol=1e-5)


# -- checkpoints: verified, never lost --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A finished 4-step run with checkpoints 2 and 4, to copy and damage."""
    cfg = tiny_config(tmp_path_factory.mktemp("two"), steps=4)
    train(cfg, progress=False)
    return cfg


def copy_run(cfg, root: Path):
    shutil.copytree(cfg.run_dir, root / "run")
    return cfg.replace(run_dir=str(root / "run"))


def flip_ema_weight(path: Path, value: float = 1e29) -> None:
    """Overwrite one EMA weight inside the file with ``value``, as a disk flipping bits would."""
    payload = torch.load(path, weights_only=True)
    data = path.read_bytes()
    tensor = payload["ema"]["final_layer.linear.weight"]
    needle = tensor.contiguous().numpy().tobytes()[:64]
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) < 0
    path.write_bytes(data[:at] + struct.pack("<f", value) + data[at + 4:])


def test_flipped_bytes_are_caught_and_the_previous_checkpoint_is_used(tmp_path, two_checkpoints, caplog):
    cfg = copy_run(two_checkpoints, tmp_path)
    straight = copy_run(two_checkpoints, tmp_path / "straight")
    newest_path = checkpoint_path(cfg.run_dir, 4)
    flip_ema_weight(newest_path)
    assert torch.load(newest_path, weights_only=True)["ema"]["final_layer.linear.weight"].max() == 1e29  # loads
    with pytest.raises(ValueError, match="ckpt-0000004.pt is corrupt: its contents do not match the checksum"):
        read_training_checkpoint(newest_path)
    payload, path = latest_checkpoint(cfg.run_dir)
    assert path.name == "ckpt-0000002.pt" and "falling back to ckpt-0000002.pt" in caplog.text

    # resuming trains on from step 2 and rewrites step 4; step 2 goes only once the new step 4 is verified
    train(cfg.replace(steps=6, keep_last=1), progress=False)
    train(straight.replace(steps=6, keep_last=1), progress=False)
    assert [s for s, _ in list_checkpoints(cfg.run_dir)] == [6]
    assert_state_equals(newest(cfg.run_dir)[1], newest(straight.run_dir)[1])


def test_export_refuses_a_corrupt_checkpoint_and_falls_back(tmp_path, two_checkpoints, caplog):
    cfg = copy_run(two_checkpoints, tmp_path)
    flip_ema_weight(checkpoint_path(cfg.run_dir, 4))
    with pytest.raises(ValueError, match="ckpt-0000004.pt is corrupt"):
        export(cfg.run_dir, step=4)
    assert export(cfg.run_dir).name == "ema-0000002.safetensors"
    assert "ckpt-0000004.pt is corrupt" in caplog.text


def test_any_flipped_byte_is_caught_or_changes_nothing(tmp_path, two_checkpoints):
    """Byte flips across a whole file: reading it either fails with one sentence or yields exactly the
    payload that was saved (a flip in bytes torch does not use: zip padding, CRC fields)."""
    path = checkpoint_path(two_checkpoints.run_dir, 2)
    original = torch.load(path, weights_only=True)
    data = path.read_bytes()
    rng = random.Random(0)
    target = tmp_path / "ckpt-0000002.pt"
    caught = 0
    for position in sorted(rng.sample(range(len(data)), 150)):
        target.write_bytes(data[:position] + bytes([data[position] ^ (1 << rng.randrange(8))]) + data[position + 1:])
        try:
            payload = read_training_checkpoint(target)
        except ValueError as err:
            assert "\n" not in str(err) and "ckpt-0000002.pt" in str(err)
            caught += 1
            continue
        assert_identical(payload, original, f"byte {position}")
    assert caught > 100  # nearly every byte of a checkpoint is tensor data


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "not-a-checkpoint", "a-folder"])
def test_a_bad_newest_checkpoint_falls_back_with_one_warning(tmp_path, two_checkpoints, caplog, damage):
    cfg = copy_run(two_checkpoints, tmp_path)
    path = checkpoint_path(cfg.run_dir, 4)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.unlink()
        path.mkdir()
    payload, found = latest_checkpoint(cfg.run_dir)
    assert found.name == "ckpt-0000002.pt" and payload["step"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "ckpt-0000004.pt" in warnings[0] and "\n" not in warnings[0], warnings
    expected = {"empty": "is empty (0 bytes", "truncated": "is unreadable", "garbage": "is unreadable",
                "not-a-checkpoint": "is not a skipdit training checkpoint", "a-folder": "is unreadable"}[damage]
    assert expected in warnings[0]


def test_stale_temporary_files_are_removed_when_the_run_resumes(tmp_path, two_checkpoints, caplog):
    cfg = copy_run(two_checkpoints, tmp_path)
    folder = Path(cfg.run_dir) / "checkpoints"
    (folder / "ckpt-0000006.pt.k3j_x9a1.tmp").write_bytes(b"x" * 5000)  # a write cut short by a kill
    (folder / "ckpt-0000004.pt.abcdefgh.tmp").write_bytes(b"")
    (folder / "notes.txt").write_text("mine")  # not ours: left alone
    train(cfg.replace(steps=6), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-0000004.pt", "ckpt-0000006.pt", "notes.txt"]
    assert "removed 2 temporary files (5.0 KB)" in caplog.text


def test_export_leaves_temporary_files_alone(tmp_path, two_checkpoints):
    cfg = copy_run(two_checkpoints, tmp_path)
    stale = Path(cfg.run_dir) / "checkpoints" / "ckpt-0000006.pt.k3j_x9a1.tmp"
    stale.write_bytes(b"x")
    export(cfg.run_dir)
    assert stale.exists()


def test_a_torn_last_log_line_is_dropped_with_a_warning(tmp_path, two_checkpoints, caplog, reference):
    cfg = copy_run(two_checkpoints, tmp_path)
    log = Path(cfg.run_dir) / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 5, "loss": 0.9')  # a kill in the middle of a write
    train(cfg.replace(steps=6), progress=False)
    assert "log.jsonl: dropped its torn last line" in caplog.text
    assert log_records(cfg.run_dir) == reference[1]


def test_garbage_in_the_log_is_dropped_with_a_warning(tmp_path, two_checkpoints, caplog, reference):
    cfg = copy_run(two_checkpoints, tmp_path)
    log = Path(cfg.run_dir) / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"\xff\xfe\x00garbage\n" + b"[1, 2]\n" + b"".join(lines[1:]))
    train(cfg.replace(steps=6), progress=False)
    assert "dropped 2 lines that are not log records (line 2, 3)" in caplog.text
    assert log_records(cfg.run_dir) == reference[1]


def test_older_checkpoints_without_a_checksum_still_resume_and_export(tmp_path, monkeypatch, two_checkpoints, caplog,
                                                                     reference):
    """The format written before checksums (two long runs use it): resumed unverified, with one warning."""
    cfg = copy_run(two_checkpoints, tmp_path)
    for _, path in list_checkpoints(cfg.run_dir):
        payload = torch.load(path, weights_only=True)
        del payload["checksum"]
        torch.save(payload, path)
    monkeypatch.setattr(ckpt_module, "_warned_unverified", False)
    assert export(cfg.run_dir).name == "ema-0000004.safetensors"
    train(cfg.replace(steps=6), progress=False)
    assert caplog.text.count("has no checksum (written by an older skipdit)") == 1
    assert_state_equals(newest(cfg.run_dir)[1], reference[0][STEPS])
    assert "checksum" in newest(cfg.run_dir)[1]  # what it writes from now on is verified


def test_rotation_never_deletes_the_newest_verified_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (2, 3, 4):
        (folder / f"ckpt-{step:07d}.pt").write_bytes(b"x")
    # ckpt-4 is a corrupt leftover; ckpt-3 was just written and read back: keep_last=1 must not take it
    deleted = prune_checkpoints(tmp_path, keep_last=1, verified=folder / "ckpt-0000003.pt")
    assert [p.name for p in deleted] == ["ckpt-0000002.pt"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_a_checkpoint_that_does_not_read_back_is_not_kept_and_nothing_is_pruned(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "ckpt-0000002.pt"
    path.parent.mkdir()
    path.write_bytes(b"the previous file")
    real = ckpt_module.torch.save

    def bad_disk(obj, f, *args, **kwargs):  # the disk returns other bytes than were written
        obj = {**obj, "step": obj["step"] + 1}
        real(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", bad_disk)
    payload = {"model": {"w": torch.ones(3)}, "ema": {}, "opt": {}, "step": 2, "config": {}, "model_config": {}}
    with pytest.raises(ValueError, match="did not read back as written .*The previous checkpoints are kept"):
        save_checkpoint(payload, path)
    assert path.read_bytes() == b"the previous file" and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_the_checksum_covers_every_tensor_and_value():
    payload = {"model": {"w": torch.arange(6.0).view(2, 3)}, "ema": {"w": torch.zeros(2, 3)},
               "opt": {"state": {0: {"step": torch.tensor(3.0)}},
                       "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]},
               "step": 3, "config": {"seed": 0}}
    digest = payload_digest(payload)
    assert payload_digest({**payload, "checksum": {"digest": "x"}}) == digest  # the checksum entry is excluded
    changes = [
        {**payload, "step": 4},
        {**payload, "model": {"w": torch.arange(6.0).view(3, 2)}},  # same bytes, another shape
        {**payload, "model": {"w": torch.arange(6.0).view(2, 3).double()}},
        {**payload, "ema": {"w": torch.zeros(2, 3).index_put_((torch.tensor([1]), torch.tensor([2])),
                                                                torch.tensor(1e-30))}},
        {**payload, "opt": {**payload["opt"], "param_groups": [{"lr": 1e-4, "betas": [0.9, 0.999]}]}},
        {**payload, "config": {"seed": 0.0}},
    ]
    assert all(payload_digest(changed) != digest for changed in changes)
    strided = torch.arange(6.0).view(2, 3).t().contiguous().t()  # the same values in another memory layout
    assert not strided.is_contiguous() and payload_digest({**payload, "model": {"w": strided}}) == digest
