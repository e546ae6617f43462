"""``skipdit export``: a run's EMA weights and config as one safetensors file."""

from __future__ import annotations

from .help import examples

EXAMPLES = examples(
    "skipdit export runs/digits-skip-dit",
    "skipdit export runs/digits-skip-dit --step 2000 --out digits-skip-dit-2k.safetensors",
    "skipdit export runs/digits-deep-skip-dit --storage bf16     # half the size; loads as float32",
)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a training run's weights as safetensors", epilog=EXAMPLES)
    p.add_argument("run_dir", help="the run folder of skipdit train")
    p.add_argument("--out", help="output .safetensors (default: RUN_DIR/export/ema-<step>.safetensors)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="ema: the averaged weights (what sampling uses); model: the raw ones")
    p.add_argument("--step", type=int, help="a kept checkpoint (default: the newest whose checksum verifies)")
    p.add_argument("--storage", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="how the file stores the weights; bf16 / fp16 halve it, and the model still loads as "
                   "float32 (the bf16 values, widened) (default: fp32)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..train import export

    path = export(args.run_dir, args.out, weights=args.weights, step=args.step, storage=args.storage)
    print(f"wrote {path}")
    return 0
