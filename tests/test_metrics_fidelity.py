"""Fidelity metrics against hand-computed values, a naive SSIM, and LPIPS on random weights in the real file layouts."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from skipdit.errors import UserError
from skipdit.metrics import LPIPS, cosine_similarity, lpips, mse, psnr, ssim


def images(n=2, h=16, w=16, c=3, seed=0, frames=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, h, w, c) if frames is None else (n, frames, h, w, c)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


# ---------------------------------------------------------------- PSNR, MSE


def test_psnr_identical_is_inf_and_full_range_error_is_zero_db():
    a = images()
    assert torch.isinf(psnr(a, a)).all()
    black, white = torch.zeros(1, 4, 4, 3, dtype=torch.uint8), torch.full((1, 4, 4, 3), 255, dtype=torch.uint8)
    assert psnr(black, white).tolist() == [0.0]


def test_mse_by_hand_without_uint8_wraparound():
    a = torch.tensor([[0, 10], [20, 30]], dtype=torch.uint8).view(1, 2, 2, 1)
    b = torch.tensor([[1, 10], [22, 27]], dtype=torch.uint8).view(1, 2, 2, 1)
    assert mse(a, b).tolist() == [(1 + 0 + 4 + 9) / 4]
    assert mse(b, a).dtype == torch.float64
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / 3.5))


# ---------------------------------------------------------------- SSIM


def naive_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """SSIM of one image (H, W, C) by explicit loops over every valid 11x11 window and channel."""
    k = np.arange(11) - 5
    g = np.exp(-(k**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, wd, ch = a.shape
    values = []
    for c in range(ch):
        for i in range(h - 10):
            for j in range(wd - 10):
                x, y = a[i:i + 11, j:j + 11, c], b[i:i + 11, j:j + 11, c]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
                cov = (w * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_identical_is_one_and_negation_is_low():
    a = images()
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert (ssim(a, 255 - a) < -0.5).all()


def test_ssim_of_constant_images_by_hand():
    a, b = torch.full((1, 12, 12, 3), 100, dtype=torch.uint8), torch.full((1, 12, 12, 3), 50, dtype=torch.uint8)
    c1 = (0.01 * 255) ** 2  # no variance: SSIM is the luminance term alone
    assert ssim(a, b).item() == pytest.approx((2 * 100 * 50 + c1) / (100**2 + 50**2 + c1), rel=1e-12)


def test_ssim_matches_a_naive_loop_over_windows():
    a, b = images(n=2, h=13, w=15, seed=1).double() / 255, images(n=2, h=13, w=15, seed=2).double() / 255
    b = 0.7 * a + 0.3 * b  # correlated, so every term matters
    want = [naive_ssim(a[i].numpy(), b[i].numpy(), 1.0) for i in range(2)]
    torch.testing.assert_close(ssim(a, b, data_range=1.0), torch.tensor(want, dtype=torch.float64), rtol=1e-10,
                               atol=1e-12)


def test_ssim_matches_skimage_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = images(n=1, h=20, w=24, seed=3), images(n=1, h=20, w=24, seed=4)
    b = (a.float() * 0.6 + b.float() * 0.4).to(torch.uint8)
    want = metrics.structural_similarity(a[0].numpy(), b[0].numpy(), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255, channel_axis=-1)
    assert ssim(a, b).item() == pytest.approx(want, rel=1e-9)


def test_ssim_uint8_and_unit_float_agree_and_more_noise_scores_lower():
    a = images(n=1, h=24, w=24)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    slight, strong = ((a.float() + s * noise).clamp(0, 255).round().to(torch.uint8) for s in (5, 40))
    torch.testing.assert_close(ssim(a, slight), ssim(a.double() / 255, slight.double() / 255, data_range=1.0))
    assert 1 > ssim(a, slight).item() > ssim(a, strong).item()


def test_ssim_rejects_images_smaller_than_the_window_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(images(h=10, w=16), images(h=10, w=16))
    with pytest.raises(ValueError, match="equal shapes"):
        ssim(images(h=16), images(h=17))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ssim(images()[0], images()[0])
    with pytest.raises(ValueError, match="data_range"):
        ssim(images(), images(), data_range=0)


# ---------------------------------------------------------------- cosine similarity


def test_cosine_similarity_known_values():
    x = torch.tensor([[1.0, 2.0, 2.0], [3.0, 0.0, 4.0]])
    torch.testing.assert_close(cosine_similarity(x, 3 * x), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(cosine_similarity(x, -x), -torch.ones(2, dtype=torch.float64))
    ortho = torch.tensor([[2.0, -1.0, 0.0], [4.0, 5.0, -3.0]])
    torch.testing.assert_close(cosine_similarity(x, ortho), torch.zeros(2, dtype=torch.float64))
    assert cosine_similarity(torch.zeros(1, 3), torch.ones(1, 3)).tolist() == [0.0]
    tokens = x.view(2, 1, 3).expand(2, 4, 3)  # (N, T, D) features are flattened per sample
    torch.testing.assert_close(cosine_similarity(tokens, tokens), torch.ones(2, dtype=torch.float64))


# ---------------------------------------------------------------- videos


@pytest.mark.parametrize("metric", [mse, ssim, cosine_similarity])
def test_video_scores_are_the_mean_of_per_frame_image_scores(metric):
    a, b = images(frames=3, h=13, w=12, seed=6), images(frames=3, h=13, w=12, seed=7)
    b[:, 1] = a[:, 1]  # frames that differ by different amounts
    b[:, 2] = a[:, 2] // 2
    per_frame = torch.stack([metric(a[:, f], b[:, f]) for f in range(3)], dim=1)  # (N, F)
    got = metric(a, b)
    assert got.shape == (2,)
    torch.testing.assert_close(got, per_frame.mean(dim=1))


# ---------------------------------------------------------------- LPIPS

SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
# torchvision's features.* layouts, written out independently of skipdit: (index, in, out, kernel).
TORCHVISION_CONVS = {
    "alex": [(0, 3, 64, 11), (3, 64, 192, 5), (6, 192, 384, 3), (8, 384, 256, 3), (10, 256, 256, 3)],
    "vgg": [(i, cin, cout, 3) for i, cin, cout in [
        (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
        (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]],
}
CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


def random_backbone(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random He-scaled weights under torchvision's keys, plus a classifier key that loading must ignore."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, cin, cout, k in TORCHVISION_CONVS[net]:
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2 / (cin * k * k))
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    sd["classifier.1.weight"] = torch.randn(8, 4, generator=g)
    return sd


def random_heads(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Non-negative heads under the lpips package's keys (its trained heads are non-negative too)."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(CHANNELS[net])}


@pytest.fixture(scope="module", params=["alex", "vgg"])
def saved(request, tmp_path_factory):
    net = request.param
    root = tmp_path_factory.mktemp(net)
    backbone, heads = random_backbone(net), random_heads(net)
    torch.save(backbone, root / "backbone.pth")
    torch.save(heads, root / "heads.pth")
    model = LPIPS.load(root / "backbone.pth", root / "heads.pth", net=net)
    return net, root, backbone, heads, model


def test_lpips_loads_torchvision_and_lpips_layouts(saved):
    net, _, backbone, heads, model = saved
    for key, value in backbone.items():
        if key.startswith("features."):
            assert torch.equal(model.trunk.state_dict()[key], value)
    for i, head in enumerate(model.heads):
        assert torch.equal(head.weight, heads[f"lin{i}.model.1.weight"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_lpips_layer_outputs_have_the_papers_channel_counts(saved):
    net, *_, model = saved
    feats = model.trunk(torch.zeros(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == CHANNELS[net]


def test_lpips_zero_for_identical_symmetric_and_positive_otherwise(saved):
    *_, model = saved
    a, b = images(n=3, h=32, w=32, seed=8), images(n=3, h=32, w=32, seed=9)
    assert lpips(a, a, model).tolist() == [0.0, 0.0, 0.0]
    ab, ba = lpips(a, b, model), lpips(b, a, model)
    assert ab.shape == (3,) and ab.dtype == torch.float64 and (ab > 0).all()
    torch.testing.assert_close(ab, ba)
    torch.testing.assert_close(lpips(a, b, model, batch_size=1), ab)


def test_lpips_grey_is_repeated_to_rgb_and_videos_average_frames(saved):
    *_, model = saved
    a, b = images(n=2, h=32, w=32, c=1, seed=10), images(n=2, h=32, w=32, c=1, seed=11)
    torch.testing.assert_close(lpips(a, b, model), lpips(a.expand(-1, -1, -1, 3), b.expand(-1, -1, -1, 3), model))
    va, vb = images(n=2, frames=2, h=32, w=32, seed=12), images(n=2, frames=2, h=32, w=32, seed=13)
    vb[:, 0] = va[:, 0]
    per_frame = torch.stack([lpips(va[:, f], vb[:, f], model) for f in range(2)], dim=1)
    torch.testing.assert_close(lpips(va, vb, model, batch_size=3), per_frame.mean(dim=1))


def test_lpips_rejects_images_below_the_trunks_minimum_size(saved):
    net, *_, model = saved
    smallest = {"alex": 31, "vgg": 16}[net]
    ok = images(n=1, h=smallest, w=smallest)
    assert lpips(ok, 255 - ok, model).item() > 0
    small = images(n=1, h=smallest - 1, w=smallest + 5)
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        lpips(small, small, model)


def test_lpips_missing_files_say_which_file_and_what_it_is(saved, tmp_path):
    net, root, *_ = saved
    name = {"alex": "AlexNet", "vgg": "VGG16"}[net]
    with pytest.raises(UserError, match=f"nope.pth not found.*torchvision's {name} ImageNet weights"):
        LPIPS.load(tmp_path / "nope.pth", root / "heads.pth", net=net)
    with pytest.raises(UserError, match=f"nope.pth not found.*linear heads for {name}"):
        LPIPS.load(root / "backbone.pth", tmp_path / "nope.pth", net=net)
    with pytest.raises(ValueError, match="unknown LPIPS net 'squeeze'.*'alex', 'vgg'"):
        LPIPS.load(root / "backbone.pth", root / "heads.pth", net="squeeze")


def test_lpips_wrong_keys_and_shapes_are_named(tmp_path):
    backbone, heads = random_backbone("alex"), random_heads("alex")
    torch.save(heads, tmp_path / "heads.pth")
    broken = {k: v for k, v in backbone.items() if k != "features.3.weight"}
    broken["features.4.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing keys: features\.3\.weight; unexpected keys: features\.4\.weight"):
        LPIPS.load(tmp_path / "broken.pth", tmp_path / "heads.pth")
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save({**heads, "lin0.model.1.weight": torch.ones(1, 32, 1, 1)}, tmp_path / "bad_heads.pth")
    with pytest.raises(ValueError, match=r"wrong shapes: lin0\.model\.1\.weight \(1, 32, 1, 1\) instead of"):
        LPIPS.load(tmp_path / "backbone.pth", tmp_path / "bad_heads.pth")


class StubTrunk(nn.Module):
    """Two 'layers': the scaled input itself, and its second channel."""

    def forward(self, x):
        return [x, x[:, 1:2]]


def test_lpips_formula_by_hand_with_a_stub_trunk():
    model = LPIPS(StubTrunk(), channels=(3, 1))
    with torch.no_grad():
        model.heads[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
        model.heads[1].weight.fill_(0.5)
    # Pixels chosen so the *scaled* features are (2, 1, 2) vs (2, -2, -1) (both of norm 3), then equal (1, 1, 1).
    scaled0 = torch.tensor([[2.0, 1.0], [1.0, 1.0], [2.0, 1.0]]).view(1, 3, 1, 2)
    scaled1 = torch.tensor([[2.0, 1.0], [-2.0, 1.0], [-1.0, 1.0]]).view(1, 3, 1, 2)
    x0, x1 = SHIFT + SCALE * scaled0, SHIFT + SCALE * scaled1
    # Layer 1: unit vectors (2, 1, 2)/3 and (2, -2, -1)/3 differ by (0, 1, 1): 1*0 + 2*1 + 3*1 = 5 at one pixel of 2.
    # Layer 2: unit 1-vectors +1 and -1 differ by 2: 0.5 * 4 = 2 at one pixel of 2.
    assert model(x0, x1).item() == pytest.approx(5 / 2 + 2 / 2, rel=1e-5)


def test_video_psnr_is_the_mean_of_per_frame_psnrs():
    a, b = images(frames=3, seed=21), images(frames=3, seed=22)
    b[:, 0] = a[:, 0] // 2  # frames with different errors: pooled MSE and per-frame mean differ
    per_frame = torch.stack([psnr(a[:, k], b[:, k]) for k in range(3)]).mean(dim=0)
    assert torch.allclose(psnr(a, b), per_frame)
    pooled = 10 * torch.log10(255.0**2 / ((a.double() - b.double()) ** 2).flatten(1).mean(1))
    assert not torch.allclose(psnr(a, b), pooled)
