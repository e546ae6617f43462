"""FID / sFID / IS / precision-recall-density-coverage: closed forms, toy manifolds, the FID Inception-v3 against
torch-fidelity on the same random weights, a tiny TorchScript detector, real digits end to end, and the CLI."""

import importlib
import importlib.util
import json
import math
import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from skipdit.cli import main
from skipdit.errors import UserError
from skipdit.metrics import (
    FeatureStats,
    evaluate_fid,
    evaluate_is,
    feature_statistics,
    frechet_distance,
    inception_score,
    load_feature_net,
    manifold_radii,
    open_images,
    prdc,
)
from skipdit.metrics.features import (
    INCEPTION_FAMILY,
    FeatureNet,
    InceptionFeatures,
    InceptionV3FID,
    load_inception_state_dict,
    resize_tf1,
)
from skipdit.metrics.fid import read_stats


def gaussian(n, d, seed=0, shift=0.0):
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # diagonal: tr (S1 S2)^(1/2) = sum sqrt(a b), so d^2 = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # the same rotation of both: still commuting, same answer
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = gaussian(500, 16)
    stats = feature_statistics(x)
    assert abs(frechet_distance(*stats, *stats)) < 1e-9
    # a pure shift by s in every dim: d^2 = 16 s^2 exactly
    assert frechet_distance(*stats, *feature_statistics(x + 0.5)) == pytest.approx(16 * 0.25, rel=1e-9)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_closed_forms():
    k, n = 7, 70
    one_hot = np.full((n, k), -np.inf)
    one_hot[np.arange(n), np.arange(n) % k] = 0.0  # confident, every class equally often in every split
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0, abs=1e-12)  # exp(log k), no NaN
    same = np.tile(np.random.default_rng(0).standard_normal(k), (n, 1))  # every sample predicts the same p
    assert inception_score(same, splits=5) == pytest.approx((1.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score(same, splits=n + 1)


# ---------------------------------------------------------------- precision, recall, density, coverage


def naive_prdc(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)  # (M, N)
    r_real, r_fake = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]
    inside = d_fr <= r_real[None]
    return {
        "precision": inside.any(1).mean(),
        "recall": (d_fr <= r_fake[:, None]).any(0).mean(),
        "density": inside.sum() / (k * len(fake)),
        "coverage": inside.any(0).mean(),
    }


def integer_points(n, d, seed=0):
    """Distinct points with integer coordinates below 1000: every float32 distance between them is exact."""
    codes = np.random.default_rng(seed).choice(1000**d, n, replace=False)
    return np.stack([codes // 1000**i % 1000 for i in range(d)], 1).astype(np.float32)


def test_prdc_toy_manifolds():
    # a set against itself: P = R = C = 1, and each ball (radius = k-th neighbour) holds its centre and k others
    x = integer_points(60, 4)
    assert prdc(x, x, k=3, block_size=16) == {"precision": 1.0, "recall": 1.0, "density": 4 / 3, "coverage": 1.0}
    assert prdc(x, x + 1e5, k=3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a collapsed sample set: half of it on one real point, half far away. Half the samples lie in the real
    # manifold (precision 0.5), but every sample ball has radius 0, so only that one real is recalled.
    real = integer_points(200, 2, seed=1)
    fake = np.concatenate([np.repeat(real[:1], 10, 0), np.full((10, 2), 5000.0, np.float32)])
    s = prdc(real, fake, k=3)
    assert s["precision"] == 0.5 and s["recall"] == 1 / 200 and s == pytest.approx(naive_prdc(real, fake, 3))


def test_prdc_blocked_equals_brute_force():
    real, fake = gaussian(70, 5, seed=1), gaussian(50, 5, seed=2, shift=0.4)
    blocked = prdc(real, fake, k=4, block_size=13)
    assert blocked == pytest.approx(naive_prdc(real, fake, 4), abs=1e-12)
    assert manifold_radii(real, 4, block_size=9) == pytest.approx(
        np.sort(np.linalg.norm(real[:, None] - real[None], axis=-1), 1)[:, 4], rel=1e-4
    )
    with pytest.raises(ValueError, match="more than 3"):
        prdc(real[:3], fake, k=3)


# ---------------------------------------------------------------- images and statistics files


def test_open_images_streams_npz_and_reads_sorted_folders(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", arr_0=arr, arr_1=np.arange(7))
    source = open_images(tmp_path / "a.npz")
    batches = list(source.batches(3))
    assert len(source) == 7 and [len(b) for b in batches] == [3, 3, 1]
    assert np.array_equal(np.concatenate(batches), arr)
    (tmp_path / "png").mkdir()
    for i in (2, 0, 1):
        Image.fromarray(arr[i]).save(tmp_path / "png" / f"{i:03d}.png")
    assert np.array_equal(np.concatenate(list(open_images(tmp_path / "png").batches(2))), arr[:3])
    Image.fromarray(arr[0, :3]).save(tmp_path / "png" / "003.png")
    with pytest.raises(ValueError, match="one size"):
        list(open_images(tmp_path / "png").batches(8))
    np.savez(tmp_path / "video.npz", arr_0=np.zeros((2, 3, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="FVD"):
        open_images(tmp_path / "video.npz")
    with pytest.raises(UserError, match="nowhere"):
        open_images(tmp_path / "nowhere")


def test_stats_round_trip(tmp_path):
    mu, sigma = feature_statistics(gaussian(20, 3))
    FeatureStats(mu, sigma, "digits@0", mu, sigma, pool=np.ones((2, 3)), count=20).save(tmp_path / "s.npz")
    back = read_stats(tmp_path / "s.npz")
    assert back.feature_net == "digits@0" and back.count == 20 and np.array_equal(back.sigma_s, sigma)
    assert back.pool.shape == (2, 3) and read_stats(tmp_path / "nothing.npz") is None


class ToyNet(FeatureNet):
    """Cheap features for the FID plumbing: channel means and stds (pool), a 2x2 average of the image (spatial)."""

    provides = ("pool", "spatial")

    def __init__(self, name="toy"):
        super().__init__(nn.Identity(), name, INCEPTION_FAMILY)

    def _forward(self, x, outputs):
        return {
            "pool": torch.cat([x.mean((2, 3)), x.std((2, 3))], 1),
            "spatial": F.adaptive_avg_pool2d(x, 2).flatten(1),
        }


def test_fid_and_sfid_with_saved_reference_statistics(tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8) for _ in range(2))
    np.savez(tmp_path / "a.npz", arr_0=a)
    np.savez(tmp_path / "b.npz", arr_0=b // 2)
    net = ToyNet()
    direct = evaluate_fid(
        tmp_path / "a.npz", tmp_path / "b.npz", net, sfid=True, batch_size=7, save_ref_stats=tmp_path / "ref.npz"
    )
    fa, fb = net.features(a, ("pool", "spatial")), net.features(b // 2, ("pool", "spatial"))
    assert direct["fid"] == pytest.approx(
        frechet_distance(*feature_statistics(fa["pool"]), *feature_statistics(fb["pool"])), rel=1e-9
    )
    assert direct["sfid"] == pytest.approx(
        frechet_distance(*feature_statistics(fa["spatial"]), *feature_statistics(fb["spatial"])), rel=1e-9
    )
    stored = evaluate_fid(tmp_path / "a.npz", tmp_path / "ref.npz", net, sfid=True)
    assert stored["fid"] == direct["fid"] and stored["sfid"] == direct["sfid"] and stored["reference"] == 40
    with pytest.raises(ValueError, match="of the feature net toy, not of other"):
        evaluate_fid(tmp_path / "a.npz", tmp_path / "ref.npz", ToyNet("other"))
    evaluate_fid(tmp_path / "a.npz", tmp_path / "b.npz", net, save_ref_stats=tmp_path / "pool-only.npz")
    with pytest.raises(ValueError, match="stores no spatial statistics"):
        evaluate_fid(tmp_path / "a.npz", tmp_path / "pool-only.npz", net, sfid=True)
    with pytest.raises(ValueError, match=r"float images must be in \[0, 255\]"):
        net.pool(a / 127.5 - 1)


# ---------------------------------------------------------------- the FID Inception-v3


def random_inception_state_dict(seed=0):
    """Every torchvision key, with weights that keep activations O(1) (He init, BN close to standardising), so
    the comparison below is sensitive everywhere (BN eps, pooling, branch order)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in InceptionV3FID().state_dict().items():
        if k.endswith("conv.weight"):
            sd[k] = torch.randn(v.shape, generator=g) * math.sqrt(2 / v[0].numel())
        elif k.endswith(("bn.weight", "running_var")):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("bn.bias", "running_mean")):
            sd[k] = torch.rand(v.shape, generator=g) * 0.2 - 0.1
        elif k.startswith("fc."):
            sd[k] = torch.randn(v.shape, generator=g) / math.sqrt(v.shape[-1])
        else:
            sd[k] = v
    return sd


@pytest.fixture(scope="module")
def inception_sd():
    return random_inception_state_dict()


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory, inception_sd):
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(inception_sd, path)
    return path


def torch_fidelity_module(name):
    """A torch-fidelity submodule without its package __init__, which imports torchvision (absent here)."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip("torch-fidelity is not installed (pip install --no-deps torch-fidelity==0.4.0)")
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    with mock.patch.dict(sys.modules, {"torch_fidelity": package}):
        return importlib.import_module(f"torch_fidelity.{name}")


def test_inception_matches_torch_fidelity_on_the_same_random_weights(inception_file):
    net = load_feature_net(f"inception:{inception_file}")
    assert net.name.startswith("inception[tf]@")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1, 64, 48, 3), generator=g, dtype=torch.uint8)  # resized up to 299x299
    out = net.features(images, ("pool", "spatial", "logits"))
    assert {k: v.shape for k, v in out.items()} == {"pool": (1, 2048), "spatial": (1, 2023), "logits": (1, 1008)}

    tf = torch_fidelity_module("feature_extractor_inceptionv3")
    ref = tf.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_file)
    )
    assert set(ref.state_dict()) == set(net.module.state_dict())  # torchvision's names, both sides
    seen = {}
    ref.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.update(mixed_6_conv=o))
    with torch.no_grad():
        pool, logits = ref(images.permute(0, 3, 1, 2).contiguous())
    spatial = seen["mixed_6_conv"][:, :7].permute(0, 2, 3, 1).flatten(1)  # TF mixed_6/conv [..., :7], NHWC
    for ours, theirs in ((out["pool"], pool), (out["logits"], logits), (out["spatial"], spatial)):
        assert np.abs(theirs.numpy()).max() > 0.1  # not a vanished signal
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-5 * np.abs(theirs.numpy()).max())


class InputProbe(nn.Module):
    """Stands in for the Inception trunk: returns its input, to check what the preprocessing hands it."""

    def forward(self, x, outputs):
        return {"pool": x.flatten(1)}


@pytest.mark.parametrize("preprocess", ["tf", "pytorch-fid"])
def test_inception_preprocessing(preprocess):
    net = InceptionFeatures(InputProbe(), preprocess=preprocess)
    grey = torch.randint(0, 256, (2, 40, 30, 1), dtype=torch.uint8)
    x = grey.permute(0, 3, 1, 2).float().expand(-1, 3, -1, -1)  # one channel goes in as grey RGB
    if preprocess == "tf":  # the TF graph: TF 1.x resize, then (x - 128) / 128
        expected = (resize_tf1(x) - 128) / 128
    else:  # pytorch-fid: F.interpolate on [0, 1] (half-pixel centres), then 2x - 1
        expected = 2 * F.interpolate(x / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    np.testing.assert_allclose(net.pool(grey), expected.flatten(1).numpy(), atol=1e-6)
    assert np.array_equal(net.pool(grey), net.pool(grey.expand(-1, -1, -1, 3)))
    with pytest.raises(ValueError, match="valid: tf, pytorch-fid"):
        InceptionFeatures(InputProbe(), preprocess="clean-fid")


def test_tf1_resize_matches_torch_fidelity_and_is_the_identity_at_299():
    interp = torch_fidelity_module("interpolate_compat_tensorflow")
    x = torch.rand(1, 3, 37, 50) * 255
    for size in (299, 20):
        ref = interp.interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)
        torch.testing.assert_close(resize_tf1(x, size), ref, rtol=0, atol=2e-3)
    y = torch.rand(1, 3, 299, 299)
    assert torch.equal(resize_tf1(y), y)


def test_inception_loads_strictly_and_names_the_bad_keys(tmp_path, inception_sd):
    # torchvision's Inception3 has 27,161,264 parameters; less AuxLogits (3,326,696), plus 8 classes (16,392)
    assert sum(p.numel() for p in InceptionV3FID().parameters()) == 23_850_960
    sd = {k: v for k, v in inception_sd.items() if not k.endswith("num_batches_tracked")}  # older files lack them: fine
    load_inception_state_dict(InceptionV3FID(), sd)
    with pytest.raises(ValueError, match=r"missing keys: Mixed_6d\.branch1x1\.bn\.running_var"):
        load_inception_state_dict(
            InceptionV3FID(), {k: v for k, v in sd.items() if "6d.branch1x1.bn.running_var" not in k}
        )
    with pytest.raises(ValueError, match=r"wrong shapes: fc\.bias \(1000,\)"):
        load_inception_state_dict(InceptionV3FID(), {**sd, "fc.bias": torch.zeros(1000)})
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "alexnet.pth")
    with pytest.raises(ValueError, match=r"unexpected keys: features\.0\.weight") as err:
        load_feature_net(f"inception:{tmp_path / 'alexnet.pth'}")
    assert "\n" not in str(err.value) and "missing keys: Conv2d_1a_3x3.bn.bias" in str(err.value)


# ---------------------------------------------------------------- TorchScript detector


class TinyDetector(nn.Module):
    """The call signature of StyleGAN2-ADA's ``inception-2015-12-05.pt``, on a toy network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.output = nn.Linear(6, 5)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        x = F.interpolate(img.to(torch.float32), size=(16, 16), mode="bilinear", align_corners=False) / 128 - 1
        features = self.conv(x).relu().mean((2, 3))
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return logits.softmax(1)


@pytest.fixture(scope="module")
def tiny_ts(tmp_path_factory):
    torch.manual_seed(0)
    module = TinyDetector()
    path = tmp_path_factory.mktemp("ts") / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    return module, path


def test_torchscript_detector_call_convention(tiny_ts):
    module, path = tiny_ts
    images = torch.randint(0, 256, (3, 20, 20, 3), dtype=torch.uint8)
    x = images.permute(0, 3, 1, 2).float()
    for spec in (f"inception-ts:{path}", str(path)):  # the bare path is recognised as TorchScript
        net = load_feature_net(spec)
        assert net.name.startswith("inception-ts@")
        out = net.features(images, ("pool", "logits"), batch_size=2)
        with torch.no_grad():
            np.testing.assert_allclose(out["pool"], module(x, return_features=True).numpy(), rtol=1e-6)
            probs = module(x, no_output_bias=True).numpy()
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(out["logits"]), 1).numpy(), probs, rtol=1e-5)
    with pytest.raises(ValueError, match="sFID needs the spatial features of inception:PATH"):
        net.spatial(images)
    with pytest.raises(ValueError, match="TorchScript file: use inception-ts"):
        load_feature_net(f"inception:{path}")


# ---------------------------------------------------------------- digits, end to end


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    from skipdit.datasets import load_digits_tensors
    from skipdit.io import to_uint8

    images = to_uint8(load_digits_tensors()[0][:240]).numpy()  # (240, 16, 16, 1) uint8
    out = tmp_path_factory.mktemp("digits")
    np.savez(out / "real.npz", arr_0=images)
    np.savez(out / "first.npz", arr_0=images[:120])
    np.savez(out / "second.npz", arr_0=images[120:])
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    np.savez(out / "noise.npz", arr_0=noise)
    (out / "png").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(out / "png" / f"{i:04d}.png")
    return out


def test_digits_fid_and_is_on_real_digits(digits_npz):
    net = load_feature_net("digits")
    d, kw = digits_npz, dict(net=net, batch_size=256)
    assert abs(evaluate_fid(d / "real.npz", d / "png", **kw)["fid"]) < 1e-4  # PNGs are lossless
    halves = evaluate_fid(d / "first.npz", d / "second.npz", **kw)["fid"]
    noise = evaluate_fid(d / "noise.npz", d / "real.npz", **kw)["fid"]
    assert noise > 5 * halves > 0  # halves of 120: FDD carries the small-sample bias
    assert evaluate_is(d / "real.npz", **kw)["is"] > 7 > evaluate_is(d / "noise.npz", **kw)["is"]  # 10 classes


# ---------------------------------------------------------------- CLI


def cli(capsys, *argv):
    """``skipdit eval ...`` in batches of 256 (small batches are slow on a busy CPU)."""
    code = main([str(a) for a in argv] + ["--batch-size", "256"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_fid_is_prdc_and_saved_reference_stats(digits_npz, tmp_path, capsys):
    d = digits_npz
    code, out, _ = cli(
        capsys,
        "eval",
        "fid",
        d / "noise.npz",
        d / "png",
        "--features",
        "digits",
        "--no-progress",
        "--save-ref-stats",
        tmp_path / "ref.npz",
        "--keep-features",
    )
    assert code == 0 and out.startswith("FID: ") and "240 samples vs 240 reference" in out
    fid = float(out.split()[1])
    code, out, _ = cli(
        capsys, "eval", "fid", d / "noise.npz", tmp_path / "ref.npz", "--features", "digits", "--json", "--no-progress"
    )
    result = json.loads(out)
    assert code == 0 and result["fid"] == pytest.approx(fid, abs=1e-4) and result["feature_net"].startswith("digits@")
    code, out, _ = cli(
        capsys, "eval", "prdc", d / "real.npz", tmp_path / "ref.npz", "--features", "digits", "--json", "--no-progress"
    )  # the saved features stand in for the images
    result = json.loads(out)
    assert code == 0 and (result["precision"], result["recall"], result["coverage"]) == (1.0, 1.0, 1.0)
    code, out, _ = cli(capsys, "eval", "is", d / "real.npz", "--features", "digits", "--splits", "4", "--no-progress")
    assert code == 0 and out.startswith("Inception Score: ") and "(4 splits)" in out


def test_cli_adm_reference_batch_uses_its_stored_statistics(tiny_ts, digits_npz, tmp_path, capsys):
    _, ts = tiny_ts
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    a = np.diag(rng.uniform(0.5, 1, 6))
    np.savez(
        tmp_path / "VIRTUAL_ref.npz", arr_0=images[::-1], mu=np.ones(6), sigma=a, mu_s=np.ones(2), sigma_s=np.eye(2)
    )
    code, out, _ = cli(
        capsys,
        "eval",
        "fid",
        tmp_path / "samples.npz",
        tmp_path / "VIRTUAL_ref.npz",
        "--features",
        f"inception-ts:{ts}",
        "--json",
        "--no-progress",
    )
    net = load_feature_net(str(ts))
    expected = frechet_distance(*feature_statistics(net.pool(images)), np.ones(6), a)
    assert code == 0 and json.loads(out)["fid"] == pytest.approx(expected, rel=1e-5)
    assert json.loads(out)["reference"] is None  # stored statistics, no count
    code, _, err = cli(
        capsys,
        "eval",
        "fid",
        digits_npz / "real.npz",
        tmp_path / "VIRTUAL_ref.npz",
        "--features",
        "digits",
        "--no-progress",
    )
    assert code == 2 and "ADM reference batches" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fid", "{d}/real.npz", "{d}/missing.npz", "--features", "digits"], "missing.npz not found"),
        (["fid", "{d}/real.npz", "{d}/real.npz", "--features", "resnet"], "valid: digits, digits:PATH, inception:PATH"),
        (["fid", "{d}/real.npz", "{d}/real.npz", "--features", "inception:{d}/none.pth"], "none.pth"),
        (["fid", "{d}/real.npz", "{d}/real.npz", "--features", "digits", "--sfid"], "gives no spatial features"),
        (["fid", "{d}/real.npz", "{t}/other.npz", "--features", "digits"], "of the feature net inception[tf]@deadbeef"),
        (["prdc", "{d}/real.npz", "{t}/other.npz", "--features", "digits"], "stores statistics but no features"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(digits_npz, tmp_path, capsys, argv, message):
    mu, sigma = feature_statistics(gaussian(10, 64))
    FeatureStats(mu, sigma, "inception[tf]@deadbeef").save(tmp_path / "other.npz")
    argv = [a.format(d=digits_npz, t=tmp_path) for a in argv]
    code, _, err = cli(capsys, "eval", *argv, "--no-progress")
    assert code == 2 and message in err and err.count("\n") == 1, err
