"""``skipdit sample-many``: many samples for FID / FVD, under torchrun, resumable, packed as ADM .npz."""

from __future__ import annotations

from ..distributed import init_distributed, resolve_device
from ..errors import UserError
from ..io import parse_int_list
from ..provenance import identity
from ..sample_many import DEFAULT_BATCH, batch_note, sample_many
from ..savings import warn_if_plan_saves_nothing
from . import options
from .help import examples

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
    options.add_model_arguments(p)
    options.add_sampling_arguments(p)
    r = options.add_runtime_arguments(p, batch_help=f"seeds per batch (default {DEFAULT_BATCH}); keep it fixed when "
                              "resuming, so batches hold the same seeds", device_default="auto",
                              device_help="auto (this process's GPU, else CPU), cpu or cuda")
    r.add_argument("--out", required=True, help="output folder: samples/, samples.npz, summary.json, "
                   "settings.json (a rerun with other settings is refused)")
    r.add_argument("--overwrite", action="store_true", help="remove the samples, logs and records a previous "
                   "run left in --out and start over")
    r.add_argument("--no-pack", action="store_true", help="do not write samples.npz")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.model_dir:
        raise UserError("sample-many runs skipdit's own models; for Hunyuan-DiT use sample --task t2i --model-dir")
    seeds = parse_int_list(args.seeds, "seeds", limit=MAX_SEEDS)  # before anything is allocated or loaded
    _, _, local_rank = init_distributed()  # so that the VAE and the text encoder go to this process's device
    args.device = str(resolve_device(args.device, local_rank))
    settings = options.load_settings(args, len(seeds))
    loaded = settings.loaded
    warn_if_plan_saves_nothing(args.cache, loaded.model, settings.sampling)
    note = batch_note(args.cache)
    if note:
        print(f"note: {note}")
    path = sample_many(loaded.model, seeds, args.out, settings.condition, sampling=settings.sampling,
                       runtime=settings.runtime, cache=args.cache, vae=loaded.vae, pack=not args.no_pack,
                       progress=not args.no_progress, overwrite=args.overwrite, sources=_sources(args, loaded.request))
    print(f"{len(seeds)} samples -> {path}")
    return 0


def _sources(args, request) -> dict:
    """How the model, VAE and text encoder were given, for the settings fingerprint: the content digest of each
    local file or folder (a built-in name stays a name), and the options that change a loaded model. Random
    weights are left to sample_many, which digests the module itself."""
    sources = {"model_preset": args.model, "skip_init": args.skip_init, "image_size": args.image_size,
               "vae": identity(args.vae)}
    if not args.random_weights:
        sources["model"] = identity(request.checkpoint())
    if args.text_encoder:
        sources["text_encoder"] = identity(args.text_encoder)
    return sources
