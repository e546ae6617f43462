"""Latte (class-to-video) and Latte-T2V (text-to-video): layout, wiring, loading, parity, caching."""

import json

import pytest
import torch

from skipdit import Condition, Runtime, Sampling, generate, load, save
from skipdit.cache import parse_cache
from skipdit.models import Latte, LatteConfig, LatteT2V, LatteT2VConfig, build_model
from skipdit.models.random import randomize_
from skipdit.models.skip import fuse

TINY_C2V = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=8, num_heads=2, num_frames=4,
                num_classes=5)
TINY_T2V = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=4, num_heads=2, num_frames=4,
                caption_channels=12)


def c2v(long_skip=True, **kw):
    torch.manual_seed(0)
    return randomize_(Latte(LatteConfig(**{**TINY_C2V, "long_skip": long_skip, **kw}))).eval()


def t2v(long_skip=True, **kw):
    torch.manual_seed(0)
    return randomize_(LatteT2V(LatteT2VConfig(**{**TINY_T2V, "long_skip": long_skip, **kw}))).eval()


def video(n=2, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, frames, 8, 8, generator=g), torch.tensor([999, 300][:n])


def caption(n=2, length=5):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[0, 3:] = False
    return torch.randn(n, length, 12, generator=g), mask


# -- official layouts ---------------------------------------------------------------------------------------
def test_latte_skip_state_dict_is_the_official_layout():
    """Reference §A.3: Latte-XL/2-skip for UCF101 (extras=2)."""
    with torch.device("meta"):
        model = build_model("Latte-XL/2-UCF101-skip")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        "x_embedder.proj.weight": (1152, 4, 2, 2), "x_embedder.proj.bias": (1152,),
        "t_embedder.mlp.0.weight": (1152, 256), "t_embedder.mlp.2.weight": (1152, 1152),
        "y_embedder.embedding_table.weight": (102, 1152), "pos_embed": (1, 256, 1152), "temp_embed": (1, 16, 1152),
        "final_layer.linear.weight": (32, 1152), "final_layer.adaLN_modulation.1.weight": (2304, 1152),
    }
    for i in range(28):
        expected |= {f"blocks.{i}.attn.qkv.weight": (3456, 1152), f"blocks.{i}.attn.proj.weight": (1152, 1152),
                     f"blocks.{i}.mlp.fc1.weight": (4608, 1152), f"blocks.{i}.mlp.fc2.weight": (1152, 4608),
                     f"blocks.{i}.adaLN_modulation.1.weight": (6912, 1152)}
    for k in range(7):
        expected |= {f"skip_norms.{k}.weight": (2304,), f"skip_norms.{k}.bias": (2304,),
                     f"skip_linears.{k}.linear.weight": (1152, 2304), f"skip_linears.{k}.linear.bias": (1152,)}
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    weights = {k[: -len(".weight")] for k in shapes if k.endswith(".weight")}
    assert {k for k in shapes if k.endswith(".bias")} == {w + ".bias" for w in weights if "embedding_table" not in w}
    assert not any(k.startswith("skip_norms.7") for k in shapes) and model.num_units == 14
    assert "y_embedder.embedding_table.weight" not in build_model("Latte-S/2-skip", depth=4).state_dict()


def test_latte_t2v_skip_keys_are_diffusers_plus_skips():
    """Reference §A.4: diffusers naming; 14 skips for 28 layers; sin-cos tables not in the state dict."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=4,
        cross_attention_dim=32, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=12, video_length=4)
    ours = t2v().state_dict()
    theirs = ref.state_dict()
    skips = {k for k in ours if k.startswith(("skip_norms.", "skip_linears."))}
    assert set(ours) - skips == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    assert len(skips) == 4 * 2 and ours["skip_linears.1.linear.weight"].shape == (32, 64)
    with torch.device("meta"):
        big = build_model("Latte-T2V-skip").state_dict()
    assert big["adaln_single.linear.weight"].shape == (6912, 1152)
    assert big["caption_projection.linear_1.weight"].shape == (1152, 4096)
    assert big["proj_out.weight"].shape == (32, 1152) and big["scale_shift_table"].shape == (2, 1152)
    assert big["transformer_blocks.27.ff.net.0.proj.weight"].shape == (4608, 1152)
    assert "skip_linears.13.linear.weight" in big and "skip_linears.14.linear.weight" not in big


# -- wiring, checked against the official loops written out by hand ----------------------------------------
def test_latte_forward_matches_the_official_pair_loop():
    """latte.py: for i in 0, 2, ..., depth-2: if i >= depth/2 fuse with skip (i - depth/2)//2; spatial block;
    temporal block (+ temp_embed after the first spatial block); if i < depth/2 push."""
    model = c2v()
    x, t = video()
    y = torch.tensor([1, 3])
    n, _, f, _, _ = x.shape
    h = model.x_embedder(x.transpose(1, 2).flatten(0, 1)) + model.pos_embed
    c = model.t_embedder(t) + model.y_embedder(y)
    c_spatial, c_temporal = c.repeat_interleave(f, 0), c.repeat_interleave(h.shape[1], 0)
    depth, skips = model.config.depth, []
    for i in range(0, depth, 2):
        if i >= depth // 2:
            k = (i - depth // 2) // 2
            h = fuse(model.skip_norms[k], model.skip_linears[k], h, skips.pop())
        h = model.blocks[i](h, c_spatial)
        h = h.unflatten(0, (n, f)).transpose(1, 2).flatten(0, 1)  # (b f) t d -> (b t) f d
        if i == 0:
            h = h + model.temp_embed
        h = model.blocks[i + 1](h, c_temporal)
        h = h.unflatten(0, (n, -1)).transpose(1, 2).flatten(0, 1)
        if i < depth // 2:
            skips.append(h)
    out = model.final_layer(h, c_spatial)
    manual = out.reshape(n, f, 4, 4, 2, 2, 8).permute(0, 6, 1, 2, 4, 3, 5).reshape(n, 8, f, 8, 8)
    torch.testing.assert_close(model(x, t, y), manual, atol=1e-5, rtol=1e-5)


def test_latte_t2v_skip_wiring_is_layer_granular():
    """latte_t2v_skip.py: for layer i >= depth/2 fuse with skip i - depth/2 (layer i meets layer depth-1-i)."""
    model = t2v()
    order = []
    for k, module in enumerate(model.skip_linears):
        module.register_forward_hook(lambda m, a, o, k=k: order.append(("fuse", k)))
    for i, block in enumerate(model.transformer_blocks):
        block.register_forward_hook(lambda m, a, o, i=i: order.append(("spatial", i)))
    for i, block in enumerate(model.temporal_transformer_blocks):
        block.register_forward_hook(lambda m, a, o, i=i: order.append(("temporal", i)))
    model(*video(), *caption())
    assert order == [("spatial", 0), ("temporal", 0), ("spatial", 1), ("temporal", 1),
                     ("fuse", 0), ("spatial", 2), ("temporal", 2), ("fuse", 1), ("spatial", 3), ("temporal", 3)]


def test_long_skip_pairs_mirror_units():
    """The stack pairs unit i with unit L-1-i: record what each fusion receives."""
    model = c2v()
    outputs, received = {}, {}
    original_unit = model.unit

    def unit(i, h, ctx, memo=None):
        outputs[i] = original_unit(i, h, ctx, memo)
        return outputs[i]

    model.unit = unit
    for k, norm in enumerate(model.skip_norms):
        norm.register_forward_hook(lambda m, a, o, k=k: received.__setitem__(k, a[0][..., 32:]))
    model(*video(), torch.tensor([0, 1]))
    half = model.num_units // 2
    for k in range(half):
        torch.testing.assert_close(received[k], outputs[half - 1 - k])


# -- shapes, frames, images -------------------------------------------------------------------------------
def test_shapes_and_fewer_frames():
    model = c2v()
    x, t = video(frames=3)
    assert model(x, t, torch.tensor([0, 4])).shape == (2, 8, 3, 8, 8)
    assert t2v()(x, t, *caption()).shape == (2, 8, 3, 8, 8)
    assert model.sample_shape() == (4, 4, 8, 8) and model.sample_shape(2) == (4, 2, 8, 8)


def test_too_many_frames_is_a_clear_error():
    x, t = video(frames=6)
    with pytest.raises(ValueError, match="serves at most 4"):
        c2v()(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="serves at most 4"):
        t2v()(x, t, *caption())


def test_image_frames_bypass_temporal_attention():
    """Joint image-video training: appended images never touch the video frames, and each image is what
    the model makes of it alone with the temporal blocks skipped."""
    for model, cond in ((c2v(), (torch.tensor([1, 2]),)), (t2v(), caption())):
        x, t = video(frames=4)
        images = torch.randn(2, 4, 2, 8, 8)
        joint = model(torch.cat([x, images], dim=2), t, *cond, num_image_frames=2)
        torch.testing.assert_close(joint[:, :, :4], model(x, t, *cond), atol=1e-5, rtol=1e-5)
        if isinstance(model, LatteT2V):
            alone = model(images[:, :, :1], t, *cond, temporal=False)
            torch.testing.assert_close(joint[:, :, 4:5], alone, atol=1e-5, rtol=1e-5)


def test_image_labels_condition_their_frames():
    model = c2v()
    x, t = video(frames=4)
    both = torch.cat([x, torch.randn(2, 4, 1, 8, 8)], dim=2)
    a = model(both, t, torch.tensor([1, 2]), num_image_frames=1, image_labels=torch.tensor([[3], [4]]))
    b = model(both, t, torch.tensor([1, 2]), num_image_frames=1)
    torch.testing.assert_close(a[:, :, :4], b[:, :, :4])
    assert not torch.allclose(a[:, :, 4], b[:, :, 4])


def test_text_mask_hides_padding():
    model = t2v()
    x, t = video()
    text, mask = caption()
    changed = text.clone()
    changed[0, 3:] += 5.0  # only masked-out tokens of sample 0 change
    torch.testing.assert_close(model(x, t, text, mask)[0], model(x, t, changed, mask)[0])
    with pytest.raises(ValueError, match="caption embeddings of width 7"):
        model(x, t, torch.randn(2, 5, 7))


# -- diffusers parity ------------------------------------------------------------------------------------
def test_latte_t2v_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=3,
        cross_attention_dim=32, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=12, video_length=4).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # adaLN-single and the output start near zero
    model = LatteT2V(LatteT2VConfig(**{**TINY_T2V, "depth": 3})).eval()
    model.load_state_dict(ref.state_dict())
    x, t = video()
    text, _ = caption()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, text), ref(x, t, text, return_dict=False)[0], atol=1e-5, rtol=0)
        image = ref(x[:, :, :1], t, text, enable_temporal_attentions=False, return_dict=False)[0]
        torch.testing.assert_close(model(x[:, :, :1], t, text, temporal=False), image, atol=1e-5, rtol=0)


# -- loading -----------------------------------------------------------------------------------------------
def test_official_latte_checkpoint_loads_by_identity(tmp_path):
    model = c2v()
    path = tmp_path / "ucf101-skip.pt"
    torch.save({"ema": model.state_dict()}, path)  # train_with_img.py saves {"ema"} only
    loaded = load(path, num_heads=2)  # heads are not in the shapes (Latte-XL/2 gets 16 by its width)
    assert isinstance(loaded, Latte) and loaded.config.num_classes == 5 and loaded.config.num_frames == 4
    x, t = video()
    y = torch.tensor([0, 1])
    torch.testing.assert_close(loaded(x, t, y), model(x, t, y))


def test_official_latte_t2v_checkpoint_and_diffusers_folder(tmp_path):
    from safetensors.torch import save_file

    model = t2v()
    pt = tmp_path / "Latte-skip.pt"
    torch.save({"model": model.state_dict(), "ema": model.state_dict()}, pt)
    loaded = load(pt, input_size=8, num_frames=4, num_heads=2)
    x, t = video()
    torch.testing.assert_close(loaded(x, t, *caption()), model(x, t, *caption()))

    vanilla = t2v(long_skip=False)
    folder = tmp_path / "Latte-1" / "transformer"
    folder.mkdir(parents=True)
    save_file(vanilla.state_dict(), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "LatteTransformer3DModel", "num_attention_heads": 2, "attention_head_dim": 16,
        "in_channels": 4, "out_channels": 8, "num_layers": 4, "cross_attention_dim": 32, "attention_bias": True,
        "sample_size": 8, "patch_size": 2, "activation_fn": "gelu-approximate", "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 12, "video_length": 4}))
    plain = load(tmp_path / "Latte-1")  # a pipeline folder: the transformer/ subfolder
    assert isinstance(plain, LatteT2V) and not plain.has_long_skips and plain.config.num_frames == 4
    torch.testing.assert_close(plain(x, t, *caption()), vanilla(x, t, *caption()))
    # the two-stage conversion starts here: a vanilla folder into Latte-T2V-skip, skips new
    with pytest.raises(ValueError, match="pass skip_init"):
        load(folder, "Latte-T2V-skip", num_heads=2, hidden_size=32, depth=4)
    converted, report = load(folder, "Latte-T2V-skip", skip_init="torch_default", return_report=True,
                             num_heads=2, hidden_size=32, depth=4)
    assert converted.has_long_skips and len(report.new) == 8 and report.source_format == "diffusers-latte"


# diffusers 0.24 CaptionProjection(in_features, hidden_size, num_tokens=120) saves the persistent buffer
# y_embedding = randn(num_tokens, in_features) / in_features**0.5; the official Latte-T2V code pins 0.24.0
def _y_embedding(rows=120):
    g = torch.Generator().manual_seed(5)
    return torch.randn(rows, TINY_T2V["caption_channels"], generator=g) / TINY_T2V["caption_channels"] ** 0.5


_WHY = "diffusers 0.24 CaptionProjection buffer"


@pytest.mark.parametrize("layout", ["model+ema", "raw"])
def test_official_t2v_checkpoint_with_the_caption_buffer_loads(tmp_path, layout):
    model = t2v()
    state = {**model.state_dict(), "caption_projection.y_embedding": _y_embedding()}
    decoy = {k: torch.zeros_like(v) for k, v in state.items()}  # the samplers load "ema", never "model"
    pt = tmp_path / "Latte-skip.pt"
    torch.save({"model": decoy, "ema": state} if layout == "model+ema" else state, pt)
    loaded, report = load(pt, input_size=8, num_frames=4, num_heads=2, return_report=True)
    assert [k for k, _ in report.ignored] == ["caption_projection.y_embedding"] and _WHY in report.ignored[0][1]
    assert report.ok and not report.unexpected and "caption_projection.y_embedding" not in loaded.state_dict()
    x, t = video()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, *caption()), model(x, t, *caption()))


def test_diffusers_folder_with_the_caption_buffer_loads(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    ref = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=4,
        cross_attention_dim=32, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=12, video_length=4).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    plain, old = tmp_path / "new-diffusers", tmp_path / "old-diffusers"
    ref.save_pretrained(plain)
    ref.save_pretrained(old)
    weights = old / "diffusion_pytorch_model.safetensors"
    save_file({**load_file(weights), "caption_projection.y_embedding": _y_embedding()}, weights)  # as 0.24 saved
    without, with_buffer = load(plain), load(old, return_report=True)
    assert with_buffer[1].ignored and with_buffer[1].ignored[0][0] == "caption_projection.y_embedding"
    assert not load(plain, return_report=True)[1].ignored
    x, t = video()
    text, mask = caption()
    with torch.no_grad():
        assert torch.equal(with_buffer[0](x, t, text, mask), without(x, t, text, mask))
        # and the folder is read as diffusers computes it (its Latte cannot take a text mask per frame)
        torch.testing.assert_close(with_buffer[0](x, t, text), ref(x, t, text, return_dict=False)[0],
                                   atol=1e-5, rtol=0)


def test_only_the_named_buffer_is_ignored(tmp_path):
    """Everything else stays strict: another extra key, or a y_embedding that is not the caption buffer."""
    state = t2v().state_dict()
    torch.save({**state, "caption_projection.y_embedding": _y_embedding(), "caption_projection.extra": torch.zeros(3)},
               tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected 1 keys: caption_projection.extra$"):
        load(tmp_path / "extra.pt", input_size=8, num_frames=4, num_heads=2)
    wide = torch.zeros(120, TINY_T2V["caption_channels"] + 1)  # not as wide as the captions: not that buffer
    torch.save({**state, "caption_projection.y_embedding": wide}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="unexpected 1 keys: caption_projection.y_embedding"):
        load(tmp_path / "wide.pt", input_size=8, num_frames=4, num_heads=2)
    dit = c2v().state_dict()  # a class-to-video model has no caption projection: the key is unexpected there
    torch.save({**dit, "caption_projection.y_embedding": _y_embedding()}, tmp_path / "c2v.pt")
    with pytest.raises(ValueError, match="unexpected 1 keys: caption_projection.y_embedding"):
        load(tmp_path / "c2v.pt", num_heads=2)


def test_convert_drops_the_buffer_and_reports_it(tmp_path, capsys):
    from skipdit.cli import main
    from skipdit.convert.checkpoint import read_checkpoint

    model = t2v(hidden_size=384, num_heads=6, depth=2)  # a DiT-S width: the CLI infers 6 heads from it
    torch.save({"model": model.state_dict(), "ema": {**model.state_dict(), "caption_projection.y_embedding":
                _y_embedding()}}, tmp_path / "Latte-skip.pt")
    out = tmp_path / "t2v.safetensors"
    assert main(["convert", str(tmp_path / "Latte-skip.pt"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ignored caption_projection.y_embedding: {_WHY}" in printed
    state, _ = read_checkpoint(out)
    assert "caption_projection.y_embedding" not in state and set(state) == set(model.state_dict())


def test_wrong_checkpoints_fail_loudly(tmp_path):
    state = c2v().state_dict()
    broken = dict(state)
    broken.pop("blocks.3.attn.qkv.weight")
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="missing 1 keys: blocks.3.attn.qkv.weight"):
        load(tmp_path / "missing.pt", num_heads=2)
    torch.save(state, tmp_path / "latte.pt")
    with pytest.raises(ValueError, match="holds a latte model, but preset DiT-S/2 is a dit"):
        load(tmp_path / "latte.pt", "DiT-S/2")
    with pytest.raises(ValueError, match="mis-shaped"):
        load(tmp_path / "latte.pt", "Latte-S/2-skip", depth=8, hidden_size=32, num_heads=2, input_size=16)


def test_safetensors_round_trip_keeps_the_architecture(tmp_path):
    for model in (c2v(), t2v()):
        path = save(model, tmp_path / f"{type(model).__name__}.safetensors")
        loaded = load(path)
        assert type(loaded) is type(model) and loaded.config == model.config


# -- Skip-Cache and generate() -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["c2v", "t2v"])
def test_skip_cache_n1_is_uncached_and_n2_engages(family):
    model = c2v() if family == "c2v" else t2v()
    cond = [1, 2] if family == "c2v" else Condition(prompts=["a", "b"], text_encoder=_FakeEncoder())
    common = dict(condition=cond, sampling=Sampling(sampler="ddim", steps=6, guidance_scale=2.0))
    base = generate(model, [0, 1], **common)
    same = generate(model, [0, 1], cache=f"{family}:N=1", **common)
    torch.testing.assert_close(same.samples, base.samples)
    cached = generate(model, [0, 1], cache=f"{family}:N=2,start=none", **common)
    assert not torch.equal(cached.samples, base.samples)
    assert cached.stats.cached_steps == 3 and cached.stats.cached_units == (0, model.num_units - 1)
    assert base.images.shape == (2, 4, 8, 8, 4) and base.is_video  # (N, F, H, W, C), no VAE


def test_official_video_schedules():
    """Reference §B.3: c2v DDPM-250 N=2..6 and t2v DDIM-50 N2/N3/N4-700-50 on the official unit counts."""
    from skipdit.cache import official_setting
    from skipdit.diffusion import GaussianDiffusion

    def counts(spec):
        policy = parse_cache(spec)
        units, respacing = official_setting(policy)
        plan = policy.plan(GaussianDiffusion.create(respacing).sampling_timesteps(), units)
        return sum(p.full for p in plan), sum(not p.full for p in plan)

    assert [counts(f"c2v:N={n}") for n in range(2, 7)] == [(143, 107), (108, 142), (90, 160), (80, 170), (72, 178)]
    assert [counts(f"t2v:N{n}-700-50") for n in (2, 3, 4)] == [(33, 17), (28, 22), (25, 25)]


class _FakeEncoder:
    """Deterministic caption embeddings, to test generate() without a real text model."""

    dim, max_length = 12, 5

    def encode(self, prompts):
        g = torch.Generator().manual_seed(sum(map(ord, "".join(prompts))) + 1)
        return torch.randn(len(prompts), 5, 12, generator=g), torch.ones(len(prompts), 5, dtype=torch.bool)


def test_unconditional_latte_samples_without_labels():
    """FFS / Sky / Taichi are unconditional (official extras=1): no label embedder, no guidance."""
    model = c2v(num_classes=0)
    assert not hasattr(model, "y_embedder") and model.null_label is None
    out = generate(model, [0, 1], sampling=Sampling(sampler="ddim", steps=3, num_frames=2))
    assert out.samples.shape == (2, 4, 2, 8, 8) and out.labels is None
    with pytest.raises(ValueError, match="unconditional: it takes no class labels"):
        generate(model, [0], [1], sampling=Sampling(steps=2, guidance_scale=1.0))
    with pytest.raises(ValueError, match="guidance needs a conditional model"):
        generate(model, [0], sampling=Sampling(steps=2, guidance_scale=4.0))
    with pytest.raises(ValueError, match="pass prompts, not class labels"):
        generate(t2v(), [0], [1], sampling=Sampling(steps=2, guidance_scale=1.0))


def test_bf16_close_to_fp32_and_video_vae_decodes_frame_by_frame(tmp_path):
    model = t2v()
    common = dict(condition=Condition(prompts=["a"], text_encoder=_FakeEncoder()),
                  sampling=Sampling(sampler="ddim", steps=4, guidance_scale=1.0), cache="t2v:N=2,start=none")
    fp32 = generate(model, [0, 1], **common)
    bf16 = generate(model, [0, 1], runtime=Runtime(precision="bf16"), **common)
    assert (bf16.samples - fp32.samples).abs().max() / fp32.samples.abs().max() < 0.05

    class FrameVAE:  # decodes each (C, h, w) latent frame to an RGB frame twice the size
        latent_channels = 4

        def decode(self, latents, batch_size=None):
            assert latents.ndim == 4  # frames, not videos
            rgb = latents[:, :3].repeat_interleave(2, -1).repeat_interleave(2, -2)
            return rgb.tanh()

    out = generate(model, [0, 1], vae=FrameVAE(), **common)
    assert out.images.shape == (2, 4, 16, 16, 3)
    first = FrameVAE().decode(out.samples[:, :, 2]).permute(0, 2, 3, 1)  # frame 2 of each video, decoded alone
    torch.testing.assert_close(out.images[:, 2].float(), ((first.clamp(-1, 1) + 1) * 127.5 + 0.5).floor(),
                               atol=1, rtol=0)


@pytest.mark.slow
def test_compile_matches_eager_for_video_models():
    sampling = Sampling(sampler="ddim", steps=3, guidance_scale=1.0)
    for model, cond in ((c2v(), [1]), (t2v(), Condition(prompts=["a"], text_encoder=_FakeEncoder()))):
        eager = generate(model, [0], cond, sampling=sampling, cache="skip:N=2")
        compiled = generate(model, [0], cond, sampling=sampling, cache="skip:N=2", runtime=Runtime(compile=True))
        torch.testing.assert_close(compiled.samples, eager.samples, atol=1e-4, rtol=1e-4)
