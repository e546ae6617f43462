"""``skipdit sample-many``: many samples for FID / FVD, under torchrun, resumable, packed as ADM .npz."""

from __future__ import annotations

from ..assets import TASK_DEFAULTS
from ..distributed import init_distributed, resolve_device
from ..errors import UserError
from ..io import parse_int_list
from ..provenance import identity
from ..sample_many import batch_note, sample_many
from ..savings import warn_if_plan_saves_nothing
from .help import NO_PROGRESS_HELP, examples
from .sample_cmd import add_model_arguments, add_sampling_arguments, build, sampling_settings

MAX_SEEDS = 1_000_000  # 20 FID runs of 50,000: a larger count is a typo (and its paths alone fill GBs)

EXAMPLES = examples(
    "skipdit sample-many --seeds 0-999 --out samples/digits-skip           # built-in digits/Skip-DiT, one process",
    "torchrun --nproc-per-node 8 -m skipdit sample-many --ckpt DiT-XL-2-skip.pt --vae sd-vae-ft-ema/ "
    "--seeds 0-49999 --cfg-scale 1.5 --cfg-mode dit_legacy --cache c2i:N=2 --out samples/dit-skip-c2i-n2",
    'skipdit sample-many --task t2v --prompt "the digit 7 moves up" --seeds 0-255 --out samples/t2v',
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample-many", help="many samples (torchrun-ready, resumable) packed as an ADM .npz", epilog=EXAMPLES,
    )
    add_model_arguments(p)
    add_sampling_arguments(p)
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, default=16, help="seeds per batch; keep it fixed when resuming, "
                   "so batches hold the same seeds")
    r.add_argument("--device", default="auto", help="auto (this process's GPU, else CPU), cpu or cuda")
    r.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    r.add_argument("--compile", action="store_true", help="torch.compile each block")
    r.add_argument("--out", required=True, help="output folder: samples/, samples.npz, summary.json, "
                   "settings.json (a rerun with other settings is refused)")
    r.add_argument("--overwrite", action="store_true", help="remove the samples, logs and records a previous "
                   "run left in --out and start over")
    r.add_argument("--no-pack", action="store_true", help="do not write samples.npz")
    r.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def run(args) -> int:
    if args.model_dir:
        raise UserError("sample-many runs skipdit's own models; for Hunyuan-DiT use sample --task t2i --model-dir")
    seeds = parse_int_list(args.seeds, "seeds", limit=MAX_SEEDS)  # before anything is allocated or loaded
    _, _, local_rank = init_distributed()  # so that the VAE and the text encoder go to this process's device
    args.device = str(resolve_device(args.device, local_rank))
    model, vae, encoder, task = build(args)
    settings = sampling_settings(args, model, vae, encoder, task, len(seeds))
    warn_if_plan_saves_nothing(args.cache, model, settings["steps"], settings["respacing"])
    for key in ("batch_size", "device", "progress"):
        settings.pop(key)
    labels, prompts = settings.pop("labels"), settings.pop("prompts", None)
    if prompts is not None:
        prompts = [prompts[k % len(prompts)] for k in range(len(seeds))]
    note = batch_note(args.cache)
    if note:
        print(f"note: {note}")
    path = sample_many(model, seeds, args.out, labels=labels, prompts=prompts, batch_size=args.batch_size,
                       device=args.device, pack=not args.no_pack, progress=not args.no_progress, cache=args.cache,
                       overwrite=args.overwrite, sources=_sources(args, task), **settings)
    print(f"{len(seeds)} samples -> {path}")
    return 0


def _sources(args, task: str) -> dict:
    """How the model, VAE and text encoder were given, for the settings fingerprint: the content digest of each
    local file or folder (a built-in name stays a name), and the options that change a loaded model. Random
    weights are left to sample_many, which digests the module itself."""
    sources = {"model_preset": args.model, "skip_init": args.skip_init, "image_size": args.image_size,
               "vae": identity(args.vae)}
    if not args.random_weights:
        sources["model"] = identity(args.ckpt or TASK_DEFAULTS[args.task or "c2i"])
    if args.text_encoder:
        sources["text_encoder"] = identity(args.text_encoder)
    return sources
