"""``skipdit train``: train or continue a run from a YAML config."""

from __future__ import annotations

from .help import NO_PROGRESS_HELP, examples

EXAMPLES = examples(
    "skipdit train --config configs/digits/skip-dit.yaml",
    "skipdit train --config configs/c2i/DiT-XL-2-skip-imagenet256.yaml --set data.path=latents/ --set global_batch=128",
    "torchrun --nproc-per-node 8 -m skipdit train --config configs/c2i/DiT-XL-2-skip-imagenet256.yaml",
    "skipdit train --config configs/c2i/convert-DiT-XL-2-stage1.yaml --init DiT-XL-2-256x256.pt "
    "--set data.path=latents/",
    "skipdit train --config configs/c2i/convert-DiT-XL-2-stage2.yaml "
    "--init runs/convert-DiT-XL-2-stage1/checkpoints/ckpt-0050000.pt --set data.path=latents/",
    note="Running the same command again continues the run from its newest good checkpoint. Ctrl-C (or SIGTERM)\n"
         "finishes the step in progress, saves it and exits with status 130; a second Ctrl-C stops at once.",
)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a DiT / Skip-DiT (resumes by default)", epilog=EXAMPLES)
    p.add_argument("--config", help="YAML config (keys: see skipdit.train.TrainConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. lr=3e-4 or data.path=/data (repeatable)")
    p.add_argument("--init", help="start from these weights (a vanilla DiT gets new long skips)")
    p.add_argument("--run-dir", help="run folder (overrides run_dir)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..train import load_config, train
    from ..train.config import dump_config

    sets = list(args.set)
    if args.init:
        sets.append(f"init={args.init}")
    if args.run_dir:
        sets.append(f"run_dir={args.run_dir}")
    config = load_config(args.config, sets)
    if args.dry_run:
        print(dump_config(config), end="")
        return 0
    path = train(config, progress=not args.no_progress)
    print(f"trained to {path}")
    return 0
