"""``skipdit convert IN OUT.safetensors``: any supported checkpoint -> our safetensors; with ``--to diffusers``, a
DiT / Skip-DiT or Latte-T2V(-skip) -> a diffusers pipeline folder (:func:`skipdit.diffusers.export_pipeline`).

The output path is checked before anything is read (a folder, an unwritable place, the input itself are
refused), and a text model keeps its text encoder settings, so the converted file samples as the source did."""

from __future__ import annotations

from ..convert.checkpoint import convert
from ..errors import UserError
from ..models.skip import SKIP_INITS
from .help import examples

TARGETS = ("safetensors", "diffusers")

EXAMPLES = examples(
    "skipdit convert DiT-XL-2-skip.pt DiT-XL-2-skip.safetensors",
    "skipdit convert DiT-XL-2-256x256.pt init-skip.safetensors --model DiT-XL/2-skip --skip-init torch_default",
    "skipdit convert ucf101-skip.pt ucf101-skip.safetensors                 # official Latte-skip (class-to-video)",
    "skipdit convert Latte-1/ init-t2v-skip.safetensors --model Latte-T2V-skip --skip-init torch_default",
    "skipdit convert digits/Skip-DiT digits-skip-dit.safetensors            # a built-in model, as a file",
    "skipdit convert DiT-XL-2-skip.pt DiT-XL-2-skip-pipe/ --to diffusers --vae sd-vae-ft-ema/   # SkipDiTPipeline",
    "skipdit convert DiT-XL-2-skip-pipe/ DiT-XL-2-skip.safetensors          # and back",
    "skipdit convert moving-digits/Latte-T2V-skip t2v-pipe/ --to diffusers   # LattePipeline (bring a text encoder)",
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a checkpoint to safetensors with its config, or to a diffusers pipeline",
        epilog=EXAMPLES,
    )
    p.add_argument("src", help="official DiT / Skip-DiT / Latte / Latte-skip .pt, a diffusers Latte or DiT folder, "
                   "diffusers DiT weights, our safetensors, or a built-in model name")
    p.add_argument("dst", help="output .safetensors, or with --to diffusers the pipeline folder to write")
    p.add_argument("--to", choices=TARGETS, default="safetensors",
                   help="safetensors: one file with its config; diffusers: a pipeline folder (model_index.json, "
                   "transformer/, scheduler/, vae/): for a DiT, one that skipdit.diffusers.SkipDiTPipeline loads, "
                   "and for a vanilla 1000-class DiT diffusers' own DiTPipeline as well; for a Latte-T2V, diffusers' "
                   "LattePipeline")
    p.add_argument("--vae", help="with --to diffusers: a local AutoencoderKL folder to include as vae/")
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
    if args.to == "diffusers":
        return _to_diffusers(args, overrides)
    if args.vae is not None:
        raise UserError("--vae goes with --to diffusers (a safetensors file holds the model only)")
    path, model, report = convert(args.src, args.dst, args.model, skip_init=args.skip_init, **overrides)
    _print_read(args, model, report)
    print(f"wrote {path}")
    return 0


_FOLDER_KINDS = {
    "dit": "DiTPipeline folder (diffusers' own; SkipDiTPipeline loads it too)",
    "skipdit": "SkipDiTPipeline folder",
    "latte": "LattePipeline folder (diffusers' own, around SkipLatteTransformer3DModel; no text encoder)",
}


def _to_diffusers(args, overrides) -> int:
    from ..diffusers import export_pipeline  # diffusers is an optional extra: imported only here

    export = export_pipeline(args.src, args.dst, args.model, vae=args.vae, skip_init=args.skip_init, **overrides)
    _print_read(args, export.model, export.report)
    print(f"wrote {export.path}: {_FOLDER_KINDS[export.layout]} with {', '.join(export.components)}")
    if export.layout == "dit":
        print("note: diffusers' DiTTransformer2DModel embeds timesteps with downscale_freq_shift=1, DiT with 0; "
              "skipdit.convert.diffusers.use_dit_frequencies(pipe.transformer) makes DiTPipeline exact")
    if export.layout == "latte":
        print("note: load it with `import skipdit.diffusers` first, and pass the text encoder the model was trained "
              "with: LattePipeline.from_pretrained(folder, tokenizer=..., text_encoder=...), or prompt_embeds")
    if "vae" not in export.components and export.model.in_channels not in (1, 3):
        print(f"note: no --vae: the pipeline returns {export.model.in_channels}-channel latents "
              "(output_type='latent') unless a vae is passed to from_pretrained")
    return 0


def _print_read(args, model, report) -> None:
    n = sum(p.numel() for p in model.parameters())
    tensors = len(model.state_dict())
    print(f"read {report.source_format} checkpoint {args.src}: {tensors} tensors, {n / 1e6:.2f}M params")
    if report.new:
        print(f"new long-skip tensors ({args.skip_init} init): {len(report.new)} ({report.new[0]} ...)")
    for key, why in report.ignored:
        print(f"ignored {key}: {why}")
