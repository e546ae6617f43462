"""``skipdit eval fid|is|prdc|fvd``: distribution metrics of generated images and videos against real ones."""

from __future__ import annotations

import argparse
import json

import torch

from ..errors import UserError
from ..metrics.features import PREPROCESS, SPECS, load_feature_net
from .help import DEVICE_HELP, NO_PROGRESS_HELP, examples

EXAMPLES = examples(
    "skipdit eval fid samples/dit-skip/samples.npz VIRTUAL_imagenet256_labeled.npz --sfid "
    "--features inception:pt_inception-2015-12-05-6726825d.pth",
    "skipdit eval is samples/dit-skip/samples.npz --features inception-ts:inception-2015-12-05.pt",
    "skipdit eval prdc samples/digits-skip/samples.npz digits-real --features digits --json",
    "skipdit eval fvd samples/latte-skip/samples.npz ucf101-frames/ --detector i3d_torchscript.pt "
    "--save-ref-stats ucf101-fvd2048_16f.npz",
    note="""
SAMPLES and REF are folders of PNG / JPEG images, .npz files with images in arr_0 (as sample-many and the ADM
reference batches hold them), or statistics saved with --save-ref-stats (.npz). An ADM reference batch is used as
the ADM evaluator uses it: FID and sFID from its stored mu / sigma, precision / recall from its images.
REF may also be digits-real, the real digits the built-in digits models learned (the worked example in
docs/evaluation.md). For fvd they are video sets: an .npz with arr_0 (N, F, H, W, C), a folder of .npy / .gif /
.mp4 videos or of frame folders, or saved FVD statistics.
""",
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="FID, sFID, Inception Score, precision / recall / density / coverage",
        epilog=EXAMPLES,
    )
    metrics = p.add_subparsers(dest="eval_command", required=True, metavar="METRIC")
    for add in METRICS:
        add(metrics)


def _parser(metrics, name: str, help: str, reference: bool) -> argparse.ArgumentParser:
    p = metrics.add_parser(name, help=help, epilog=EXAMPLES)
    p.add_argument("samples", metavar="SAMPLES", help="generated images: folder, images .npz or stats .npz")
    if reference:
        p.add_argument(
            "reference", metavar="REF", help="real images: folder, images .npz, stats .npz or an ADM reference batch"
        )
    p.add_argument("--features", required=True, metavar="SPEC", help=f"feature net: {SPECS}")
    p.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default="tf",
        help="Inception input: tf (TF 1.x resize, as the ADM evaluator) or pytorch-fid",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    if reference:
        p.add_argument("--save-ref-stats", metavar="PATH", help="write the reference statistics to PATH (.npz)")
        p.add_argument(
            "--from-images",
            action="store_true",
            help="ignore statistics stored in SAMPLES / REF and compute them from their images",
        )
    return p


def _add_fid(metrics) -> None:
    p = _parser(metrics, "fid", "Fréchet Inception Distance (and sFID)", reference=True)
    p.add_argument("--sfid", action="store_true", help="also sFID (spatial Inception features; inception:PATH only)")
    p.add_argument(
        "--keep-features",
        action="store_true",
        help="with --save-ref-stats: store the pool features too, for `eval prdc` later",
    )
    p.set_defaults(run=run_fid)


def _add_is(metrics) -> None:
    p = _parser(metrics, "is", "Inception Score", reference=False)
    p.add_argument("--splits", type=int, default=10, help="parts the score is averaged over")
    p.set_defaults(run=run_is)


def _add_prdc(metrics) -> None:
    p = _parser(
        metrics, "prdc", "precision, recall (Kynkäänniemi et al.), density, coverage (Naeem et al.)", reference=True
    )
    p.add_argument("--k", type=int, default=3, help="nearest neighbour that sets each ball's radius")
    p.set_defaults(run=run_prdc)


def _add_fvd(metrics) -> None:
    p = metrics.add_parser(
        "fvd", help="Fréchet Video Distance (StyleGAN-V fvd2048_16f), optionally per-frame FID",
        epilog=EXAMPLES,
    )
    p.add_argument("samples", metavar="SAMPLES", help="generated videos: .npz, folder, or FVD stats .npz")
    p.add_argument("reference", metavar="REF", help="real videos: .npz, folder, or FVD stats .npz")
    p.add_argument("--detector", required=True, metavar="PATH", help="local I3D TorchScript (i3d_torchscript.pt)")
    p.add_argument("--num-videos", type=int, default=2048, help="videos per set (more: a seeded subset)")
    p.add_argument("--clip-length", type=int, default=16, help="frames per clip")
    p.add_argument("--real-subsample", type=int, default=3,
                   help="real clips take every k-th frame from a random offset (3: as Skip-DiT's compute_fvd "
                        "asks; 1: what its dataset class really does, and upstream StyleGAN-V)")
    p.add_argument("--seed", type=int, default=0, help="seeds the real clips' offsets and any video subset")
    p.add_argument("--frame-fid", metavar="SPEC", help=f"also per-frame FID with this image feature net ({SPECS})")
    p.add_argument("--batch-size", type=int, default=8, help="clips per detector call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    p.add_argument("--save-ref-stats", metavar="PATH", help="write the real clips' statistics to PATH (.npz)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run_fvd)


METRICS = [_add_fid, _add_is, _add_prdc, _add_fvd]  # one function per metric, each adding its subparser


def _net(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    return load_feature_net(args.features, device=args.device, preprocess=args.preprocess)


def _report(args, result: dict, lines: list[str]) -> int:
    if args.json:
        print(json.dumps(result))
    else:
        ref = result.get("reference")
        counts = f"{result['samples']} samples" + (f" vs {ref} reference" if ref is not None else "")
        print("\n".join([*lines, f"({counts}; features {result['feature_net']})"]))
    return 0


def run_fid(args) -> int:
    from ..metrics.fid import evaluate_fid

    if args.keep_features and not args.save_ref_stats:
        raise UserError("--keep-features stores features with --save-ref-stats; give that too")
    result = evaluate_fid(
        args.samples,
        args.reference,
        _net(args),
        sfid=args.sfid,
        batch_size=args.batch_size,
        save_ref_stats=args.save_ref_stats,
        keep_features=args.keep_features,
        from_images=args.from_images,
        progress=not args.no_progress,
    )
    lines = [f"FID: {result['fid']:.4f}"] + ([f"sFID: {result['sfid']:.4f}"] if args.sfid else [])
    return _report(args, result, lines)


def run_is(args) -> int:
    from ..metrics.fid import evaluate_is

    result = evaluate_is(
        args.samples, _net(args), splits=args.splits, batch_size=args.batch_size, progress=not args.no_progress
    )
    return _report(
        args, result, [f"Inception Score: {result['is']:.4f} ± {result['is_std']:.4f} ({result['splits']} splits)"]
    )


def run_prdc(args) -> int:
    from ..metrics.prdc import evaluate_prdc

    result = evaluate_prdc(
        args.samples,
        args.reference,
        _net(args),
        k=args.k,
        batch_size=args.batch_size,
        save_ref_stats=args.save_ref_stats,
        from_images=args.from_images,
        progress=not args.no_progress,
    )
    lines = [f"{name.capitalize()}: {result[name]:.4f}" for name in ("precision", "recall", "density", "coverage")]
    return _report(args, result, lines)


def run_fvd(args) -> int:
    from ..metrics import fvd as F

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    detector = F.load_detector(args.detector, args.device)
    net = load_feature_net(args.frame_fid, device=args.device) if args.frame_fid else None
    result = F.evaluate_fvd(args.samples, args.reference, detector, clip_length=args.clip_length,
                            real_subsample=args.real_subsample, num_videos=args.num_videos, seed=args.seed,
                            batch_size=args.batch_size, save_ref_stats=args.save_ref_stats, frame_fid_net=net,
                            progress=not args.no_progress)
    lines = [f"FVD: {result['fvd']:.4f}"]
    if net is not None:
        lines.append(f"per-frame FID ({net.name}): {result['frame_fid']:.4f}")
    return _report(args, result, lines)
