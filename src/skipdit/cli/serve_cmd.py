"""``skipdit serve``: a local web demo of Skip-Cache (Gradio), the built-in models or a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..convert.latte import read_model_config
from ..distributed import check_device
from ..errors import UserError
from ..loading import ModelRequest
from ..serve import Models, launch
from .common import positive_int
from .help import DEVICE_HELP, examples
from .options import DEFAULT_DEVICE

EXAMPLES = examples(
    "skipdit serve                                  # the built-in models, on http://127.0.0.1:7860",
    "skipdit serve --port 8080 --ckpt runs/digits-skip-dit/checkpoints/last.pt",
    "skipdit serve --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ --device cuda",
    "skipdit serve --model-dir digits-pipe/          # a folder of skipdit convert --to diffusers",
)
MAX_PORT = 65535


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="a local web page: sample with a cache and without, side by side",
        description="Serve a Gradio page that samples with a cache spec and without it on the same seeds, and "
        "shows both outputs, the cache plan, the measured and ideal speed-up and the PSNR / SSIM. One request "
        "runs at a time. The API endpoint 'generate' (gradio_client) takes model, condition, cache, seeds, "
        "sampler and steps.", epilog=EXAMPLES,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens the page to the network)")
    p.add_argument("--port", type=positive_int, default=7860, help="port to listen on")
    g = p.add_argument_group("model (the built-in models are always offered)")
    g.add_argument("--ckpt", help="also offer this model: official DiT / Latte .pt, a diffusers Latte folder, or "
                   "our .safetensors (selected first)")
    g.add_argument("--model-dir", help="also offer this diffusers pipeline folder (SkipDiTPipeline, DiTPipeline "
                   "or LattePipeline, e.g. from skipdit convert --to diffusers; its vae/ is used when present)")
    g.add_argument("--model", help="with --ckpt: the architecture preset, e.g. DiT-XL/2-skip (default: the "
                   "architecture in --ckpt)")
    g.add_argument("--vae", help="with --ckpt: local diffusers AutoencoderKL folder (latent models)")
    g.add_argument("--text-encoder", help="with --ckpt of a text model: 'minilm' or a local T5 / CLIP folder "
                   "(default: the one the model was trained with)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.port > MAX_PORT:
        raise UserError(f"--port must be at most {MAX_PORT}, got {args.port}")
    if args.ckpt and args.model_dir:
        raise UserError("give --ckpt or --model-dir, not both")
    if not (args.ckpt or args.model_dir) and (args.model or args.vae or args.text_encoder):
        raise UserError("--model, --vae and --text-encoder describe a --ckpt or --model-dir; the built-in models "
                        "need none")
    check_device(args.device)
    extra = {}
    if args.model_dir:
        extra[args.model_dir] = pipeline_request(args)
    elif args.ckpt:
        extra[args.ckpt] = ModelRequest(ckpt=args.ckpt, model=args.model, vae=args.vae,
                                        text_encoder=args.text_encoder)
    models = Models(extra, device=args.device)
    launch(models, args.host, args.port, default=args.model_dir or args.ckpt or models.names[0])
    return 0


def pipeline_request(args) -> ModelRequest:
    """The model of a diffusers pipeline folder: its transformer, read by skipdit.load, and its ``vae/`` unless
    ``--vae`` names another."""
    folder = Path(args.model_dir)
    _, config = read_model_config(folder)  # a folder with no diffusers model in it fails here, in one line
    if config.get("_class_name") == "HunyuanDiT2DModel":
        raise UserError(f"{folder} is a Hunyuan-DiT pipeline: the demo runs skipdit's own models; sample it with "
                        "skipdit sample --task t2i --model-dir")
    vae = args.vae or (str(folder / "vae") if (folder / "vae" / "config.json").is_file() else None)
    return ModelRequest(ckpt=str(folder), model=args.model, vae=vae, text_encoder=args.text_encoder)
