"""The model protocol (skipdit.protocol): every model family and every built-in model implements it, and
protocol_problems names what a broken model gets wrong."""

import pytest
import torch

import skipdit
from skipdit.assets import BUILTIN_MODELS
from skipdit.models import LatteT2V, LatteT2VConfig, build_model
from skipdit.protocol import DiffusionModel, check_model, protocol_problems

TINY_DIT = dict(input_size=8, depth=2, hidden_size=32, num_heads=2)
TINY_LATTE = dict(input_size=8, depth=4, hidden_size=32, num_heads=2, num_frames=4)
TINY_T2V = dict(input_size=8, depth=2, hidden_size=32, num_heads=2, caption_channels=12)

# name -> (builder, expected (task, conditioning, num_classes, null_label, num_frames, num_units))
TINY = {
    "DiT": (lambda: build_model("DiT-S/2", **TINY_DIT), ("c2i", "class", 1000, 1000, None, 2)),
    "DiT-skip": (lambda: build_model("DiT-S/2-skip", **TINY_DIT), ("c2i", "class", 1000, 1000, None, 2)),
    "Latte-uncond": (lambda: build_model("Latte-S/2", **TINY_LATTE, num_classes=0), ("c2v", "class", 0, None, 4, 2)),
    "Latte-uncond-skip": (lambda: build_model("Latte-S/2-skip", **TINY_LATTE, num_classes=0),
                          ("c2v", "class", 0, None, 4, 2)),
    "Latte-3-classes": (lambda: build_model("Latte-S/2", **TINY_LATTE, num_classes=3), ("c2v", "class", 3, 3, 4, 2)),
    "Latte-3-classes-skip": (lambda: build_model("Latte-S/2-skip", **TINY_LATTE, num_classes=3),
                             ("c2v", "class", 3, 3, 4, 2)),
    "LatteT2V": (lambda: LatteT2V(LatteT2VConfig(**TINY_T2V, num_frames=4)), ("t2v", "text", 0, None, 4, 2)),
    "LatteT2V-skip": (lambda: LatteT2V(LatteT2VConfig(**TINY_T2V, num_frames=4, long_skip=True)),
                      ("t2v", "text", 0, None, 4, 2)),
    "LatteT2V-t2i-skip": (lambda: LatteT2V(LatteT2VConfig(**TINY_T2V, num_frames=1, long_skip=True)),
                          ("t2i", "text", 0, None, 1, 2)),
}


def protocol_values(model):
    return (model.task, model.conditioning, model.num_classes, model.null_label, model.num_frames, model.num_units)


@pytest.mark.parametrize("name", TINY)
def test_every_family_implements_the_protocol(name):
    build, expected = TINY[name]
    model = build()
    assert protocol_problems(model) == []
    check_model(model)
    assert isinstance(model, DiffusionModel)
    assert protocol_values(model) == expected
    assert model.has_long_skips == name.endswith("-skip")
    assert model.in_channels == 4 and model.learn_sigma
    assert len(model.sample_shape()) == (3 if model.num_frames is None else 4)


@pytest.mark.parametrize("name", TINY)
def test_repeated_blocks_are_the_transformer_blocks(name):
    model = TINY[name][0]()
    blocks = list(model.repeated_blocks())
    if isinstance(model, LatteT2V):  # the spatial blocks of all layers, then their temporal blocks
        assert blocks == [*model.transformer_blocks, *model.temporal_transformer_blocks]
    else:  # DiT blocks; Latte's alternate spatial, temporal
        assert blocks == list(model.blocks)
    assert len(blocks) == (1 if model.task == "c2i" else 2) * model.num_units


# built-in model -> (task, num_frames), as their model cards (docs/model-zoo.md) describe them
BUILTIN = {"digits/Skip-DiT": ("c2i", None), "digits/DiT": ("c2i", None), "digits-deep/Skip-DiT": ("c2i", None),
           "digits-deep/DiT": ("c2i", None), "digits/T2I-Skip-DiT": ("t2i", 1),
           "moving-digits/Latte-skip": ("c2v", 8), "moving-digits/Latte-T2V-skip": ("t2v", 8)}


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_builtin_models_implement_the_protocol(name):
    model = skipdit.load(name)
    assert protocol_problems(model) == []
    assert isinstance(model, DiffusionModel)
    assert (model.task, model.num_frames) == BUILTIN[name]
    if model.conditioning == "class":
        assert model.num_classes == 10 and model.null_label == 10  # the ten digits, then the null label
    else:
        assert model.num_classes == 0 and model.null_label is None


def test_image_model_message_names_the_argument():
    model = TINY["DiT"][0]()
    with pytest.raises(ValueError, match=r"image model: num_frames does not apply \(got 2\)"):
        model.sample_shape(2)


class Conforming:
    """A minimal object that satisfies the protocol, to break one member at a time."""

    config = None
    task = "c2i"
    conditioning = "class"
    num_classes = 10
    null_label = 10
    in_channels = 4
    learn_sigma = False
    num_frames = None
    num_units = 2
    has_long_skips = False
    sublayers = ("attn", "mlp")

    def __call__(self, x, t, *cond, cache=None):
        return x

    def sample_shape(self, num_frames=None):
        return (4, 8, 8)

    def run_units(self, h, ctx, start=0, stop=None, skips=None, memo=None):
        return h

    def first_block_input(self, h, ctx):
        return h

    def repeated_blocks(self):
        return iter(())

    def parameters(self):
        return iter(())


def without(member: str):
    """A copy of :class:`Conforming` that lacks ``member``."""
    members = {k: v for k, v in vars(Conforming).items() if k not in (member, "__dict__", "__weakref__")}
    return type(f"No_{member}", (), members)()


def with_(**members):
    """A :class:`Conforming` with ``members`` replaced."""
    return type("Changed", (Conforming,), members)()


def test_protocol_problems_of_a_conforming_object():
    assert protocol_problems(Conforming()) == []
    assert isinstance(Conforming(), DiffusionModel)


def test_protocol_problems_names_a_missing_member():
    broken = without("num_units")
    assert protocol_problems(broken) == ["no attribute 'num_units'"]
    assert not isinstance(broken, DiffusionModel)
    with pytest.raises(TypeError, match="No_num_units does not implement the skipdit model protocol: no attribute"):
        check_model(broken)
    assert protocol_problems(without("repeated_blocks")) == ["no method 'repeated_blocks'"]


def test_protocol_problems_names_a_wrong_type():
    assert protocol_problems(with_(num_units="2")) == ["num_units = '2' is not <class 'int'>"]
    assert protocol_problems(with_(learn_sigma=1, num_units=True)) == [
        "learn_sigma = 1 is not <class 'bool'>", "num_units = True is not <class 'int'>"]  # a bool is no count


def test_protocol_problems_names_a_value_out_of_its_domain():
    assert protocol_problems(with_(conditioning="audio")) == ["conditioning 'audio' is not one of ('class', 'text')"]
    assert protocol_problems(with_(null_label=None)) == ["null_label None does not fit num_classes 10"]
    assert protocol_problems(with_(num_units=0)) == ["num_units 0 < 1"]


@pytest.mark.parametrize("name", ["DiT", "DiT-skip"])
def test_the_uncached_forward_runs_each_unit_once_in_order(name):
    """The encoder and decoder halves together are the whole stack, for a vanilla model too."""
    model = TINY[name][0]().eval()
    calls = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda module, args, out, i=i: calls.append(i))
    with torch.no_grad():
        model(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.tensor([1, 1000]))
    assert calls == list(range(model.num_units))
