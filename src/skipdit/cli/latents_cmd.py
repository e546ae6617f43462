"""``skipdit extract-latents``: encode an image folder once, then train on latents."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from ..errors import UserError
from .common import positive_int
from .help import DEVICE_HELP, NO_PROGRESS_HELP, examples

EXAMPLES = examples(
    "skipdit extract-latents imagenet/train --vae sd-vae-ft-ema/ --image-size 256 --out latents/imagenet256",
    "skipdit train --config configs/c2i/DiT-XL-2-skip-imagenet256.yaml --set data.path=latents/imagenet256",
)


def add_parser(sub) -> None:
    p = sub.add_parser("extract-latents", help="encode an image folder into latent shards for training",
                       epilog=EXAMPLES)
    p.add_argument("images", help="image folder: one sub-folder per class")
    p.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder")
    p.add_argument("--image-size", type=positive_int, required=True,
                   help="image side in pixels (ADM centre crop, as training on images does)")
    p.add_argument("--out", required=True, help="output folder for the shards")
    p.add_argument("--shard-size", type=positive_int, default=10_000, help="latents per shard file")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per VAE forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..train import extract_latents

    created = not Path(args.out).exists()
    try:
        out = extract_latents(args.images, args.vae, args.out, args.image_size, shard_size=args.shard_size,
                              batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    except UserError as err:
        if created:  # no partial shards from a run that stopped at a bad image (the index comes last anyway)
            shutil.rmtree(args.out, ignore_errors=True)
        raise UserError(_worker_message(str(err))) from None
    print(f"wrote latent shards to {out}")
    return 0


def _worker_message(message: str) -> str:
    """The error itself when a DataLoader worker raised it: torch re-raises it in the main process with the
    worker's whole traceback as the message ("Caught UserError in DataLoader worker process 0. Original
    Traceback ... skipdit.errors.UserError: <message>"); its last line is what the user needs."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Caught "):
        return message
    return re.sub(r"^[\w.]*UserError: ", "", lines[-1].strip())


