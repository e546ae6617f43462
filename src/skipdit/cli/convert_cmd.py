"""``skipdit convert IN OUT.safetensors``: any supported checkpoint -> our safetensors.

The output path is checked before anything is read (a folder, an unwritable place, the input itself are
refused), and a text model keeps its text encoder settings, so the converted file samples as the source did."""

from __future__ import annotations

from ..convert.checkpoint import convert
from ..errors import UserError
from ..models.skip import SKIP_INITS
from .help import examples

EXAMPLES = examples(
    "skipdit convert DiT-XL-2-skip.pt DiT-XL-2-skip.safetensors",
    "skipdit convert DiT-XL-2-256x256.pt init-skip.safetensors --model DiT-XL/2-skip --skip-init torch_default",
    "skipdit convert ucf101-skip.pt ucf101-skip.safetensors                 # official Latte-skip (class-to-video)",
    "skipdit convert Latte-1/ init-t2v-skip.safetensors --model Latte-T2V-skip --skip-init torch_default",
    "skipdit convert digits/Skip-DiT digits-skip-dit.safetensors            # a built-in model, as a file",
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a checkpoint to safetensors with its config", epilog=EXAMPLES,
    )
    p.add_argument("src", help="official DiT / Skip-DiT / Latte / Latte-skip .pt, a diffusers Latte folder, "
                   "diffusers DiT weights, our safetensors, or a built-in model name")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--model", help="the architecture preset to convert into, e.g. DiT-XL/2-skip (the model "
                   "itself is SRC; default: the architecture found in SRC)")
    p.add_argument("--skip-init", choices=SKIP_INITS,
                   help="initialise missing long skips (vanilla -> -skip model) with this scheme")
    p.add_argument("--input-size", type=int, help="latent size, needed only for diffusers state dicts")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.input_size is not None and args.input_size < 1:
        raise UserError(f"--input-size must be >= 1 (the latent side), got {args.input_size}")
    overrides = {} if args.input_size is None else {"input_size": args.input_size}
    path, model, report = convert(args.src, args.dst, args.model, skip_init=args.skip_init, **overrides)
    n = sum(p.numel() for p in model.parameters())
    tensors = len(model.state_dict())
    print(f"read {report.source_format} checkpoint {args.src}: {tensors} tensors, {n / 1e6:.2f}M params")
    if report.new:
        print(f"new long-skip tensors ({args.skip_init} init): {len(report.new)} ({report.new[0]} ...)")
    for key, why in report.ignored:
        print(f"ignored {key}: {why}")
    print(f"wrote {path}")
    return 0
