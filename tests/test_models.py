import pytest
import torch
import torch.nn.functional as F

from skipdit import build_model
from skipdit.models.layers import sincos_2d, timestep_embedding
from skipdit.models.skip import FP32LayerNorm

from .conftest import tiny_model


def official_dit_xl_shapes(skip: bool) -> dict[str, tuple]:
    """The key -> shape table of the official DiT-XL-2-256x256.pt / DiT-XL-2-skip.pt (reference §A.2)."""
    d = 1152
    shapes = {
        "x_embedder.proj.weight": (d, 4, 2, 2), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (1001, d), "pos_embed": (1, 256, d),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.linear.weight": (32, d), "final_layer.linear.bias": (32,),
    }
    for i in range(28):
        for name, shape in {
            "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,), "attn.proj.weight": (d, d),
            "attn.proj.bias": (d,), "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,),
            "mlp.fc2.weight": (d, 4 * d), "mlp.fc2.bias": (d,), "adaLN_modulation.1.weight": (6 * d, d),
            "adaLN_modulation.1.bias": (6 * d,),
        }.items():
            shapes[f"blocks.{i}.{name}"] = shape
    if skip:
        for k in range(14):
            shapes |= {f"skip_norms.{k}.weight": (2 * d,), f"skip_norms.{k}.bias": (2 * d,),
                       f"skip_linears.{k}.linear.weight": (d, 2 * d), f"skip_linears.{k}.linear.bias": (d,)}
    return shapes


@pytest.mark.parametrize("preset,skip", [("DiT-XL/2", False), ("DiT-XL/2-skip", True)])
def test_state_dict_matches_official_layout(preset, skip):
    with torch.device("meta"):
        model = build_model(preset)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_dit_xl_shapes(skip)
    params = sum(v.numel() for k, v in model.state_dict().items() if k != "pos_embed")
    lsc = 14 * 2_659_968  # 14 x (LayerNorm(2304) + Linear(2304 -> 1152)), reference §A.2
    assert params == 712_074_272 - (0 if skip else lsc)  # 712.07M Skip-DiT, 674.83M DiT


def test_forward_shapes_and_learned_sigma(skip_model):
    x = torch.randn(2, 3, 8, 8)
    out = skip_model(x, torch.tensor([0, 999]), torch.tensor([1, 2]))
    assert out.shape == (2, 6, 8, 8)  # eps and variance channels


def _manual_forward(model, x, t, y):
    """DiT written out by hand from the paper's description, pairing block i with block L-1-i."""
    h, c = model.embed(x, t, y)
    depth, outs = model.config.depth, {}
    for i, block in enumerate(model.blocks):
        if model.config.long_skip and i >= depth // 2:
            k = i - depth // 2
            cat = torch.cat([h, outs[depth - 1 - i]], dim=-1)
            normed = F.layer_norm(cat, (cat.shape[-1],), model.skip_norms[k].weight, model.skip_norms[k].bias, 1e-6)
            h = F.linear(normed, model.skip_linears[k].linear.weight, model.skip_linears[k].linear.bias)
        h = block(h, c)
        outs[i] = h
    return model.head(h, c)


@pytest.mark.parametrize("long_skip", [False, True])
def test_forward_matches_hand_written_wiring(long_skip):
    model = tiny_model(long_skip=long_skip, depth=6)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([10, 700]), torch.tensor([3, 10])
    torch.testing.assert_close(model(x, t, y), _manual_forward(model, x, t, y), rtol=0, atol=1e-6)


def test_long_skip_false_is_plain_dit():
    vanilla, skip = tiny_model(long_skip=False), tiny_model(long_skip=True)
    assert not any(k.startswith("skip_") for k in vanilla.state_dict())
    # Same weights apart from the long skips; the skip model must actually differ.
    skip.load_state_dict({**skip.state_dict(), **vanilla.state_dict()})
    x, t, y = torch.randn(1, 3, 8, 8), torch.tensor([500]), torch.tensor([4])
    assert not torch.allclose(skip(x, t, y), vanilla(x, t, y))


def test_fp32_layernorm_under_low_precision():
    norm = FP32LayerNorm(8, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(4, 8).bfloat16()
    out = norm(x)
    assert out.dtype == torch.bfloat16
    ref = F.layer_norm(x.float(), (8,), norm.weight, norm.bias, 1e-6).bfloat16()
    assert torch.equal(out, ref)


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 3.0]), 4)
    # half = 2: freqs 1 and 1e4^(-1/2) = 0.01; layout [cos, cos, sin, sin]
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                             [torch.cos(torch.tensor(3.0)), torch.cos(torch.tensor(0.03)),
                              torch.sin(torch.tensor(3.0)), torch.sin(torch.tensor(0.03))]])
    torch.testing.assert_close(emb, expected)


def test_sincos_2d_layout():
    table = sincos_2d(8, 2)  # 4 tokens, row-major; first half encodes the column, second half the row
    s1, c1, s01, c01 = (float(f(torch.tensor(v))) for f, v in
                        ((torch.sin, 1.0), (torch.cos, 1.0), (torch.sin, 0.01), (torch.cos, 0.01)))
    # token 1 is (row 0, column 1); frequencies of a 4-dim half are 1 and 1e4^(-1/2) = 0.01
    torch.testing.assert_close(table[1], torch.tensor([s1, s01, c1, c01, 0, 0, 1, 1], dtype=torch.float64))


def test_label_dropout():
    model = build_model("DiT-S/2", **{"input_size": 4, "depth": 1, "num_classes": 10, "class_dropout_prob": 0.5})
    assert model.y_embedder.embedding_table.weight.shape[0] == 11
    emb = model.y_embedder
    labels = torch.zeros(4000, dtype=torch.long)
    emb.train()
    dropped = (emb(labels) == emb.embedding_table.weight[10]).all(dim=1).float().mean()
    assert 0.45 < dropped < 0.55
    emb.eval()
    assert torch.equal(emb(labels[:3]), emb.embedding_table.weight[[0, 0, 0]])
    forced = emb(labels[:2], force_drop=torch.tensor([1, 0]))
    assert torch.equal(forced, emb.embedding_table.weight[[10, 0]])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(input_size=30, patch_size=4), "not divisible by the patch size"),
        (dict(long_skip=True, depth=5), "depth must be even"),
        (dict(skip_init="kaiming"), "unknown skip_init"),
        (dict(num_heads=5), "not divisible by 5 heads"),
        (dict(nonsense=1), "unknown DiT config field"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model("DiT-S/2", **overrides)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model preset 'DiT-XXL/2'.*DiT-XL/2-skip"):
        build_model("DiT-XXL/2")


def test_skip_init_schemes():
    zero = build_model("DiT-S/2-skip", input_size=4, depth=2, skip_init="zero")
    assert torch.count_nonzero(zero.skip_linears[0].linear.weight) == 0
    xavier = build_model("DiT-S/2-skip", input_size=4, depth=2, skip_init="xavier")
    bound = (6 / (768 + 384)) ** 0.5
    w = xavier.skip_linears[0].linear.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.count_nonzero(xavier.skip_linears[0].linear.bias) == 0
    default = build_model("DiT-S/2-skip", input_size=4, depth=2)
    b = default.skip_linears[0].linear.bias  # PyTorch default: U(+-1/sqrt(fan_in)) (§A.2)
    assert b.abs().max() <= 768**-0.5 and torch.count_nonzero(b) > 0
