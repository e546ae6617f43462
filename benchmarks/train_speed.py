"""Training throughput (samples per second).

* ``digits``: the built-in recipe (configs/digits/skip-dit.yaml) through the real ``skipdit train`` loop,
  data, EMA and logging included; the figure is read from the run's log after a warm-up.
* ``xl``: one optimizer step of a DiT-XL/2-skip-sized model (256x256 latents, 32x32x4) on random latents:
  hybrid loss, backward, AdamW, EMA, as the loop does them; fp32, and bf16 autocast on CUDA.

    python benchmarks/train_speed.py                       # both, on CUDA if available
    python benchmarks/train_speed.py --only xl --batch 32 --grad-checkpointing
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from skipdit.diffusion import GaussianDiffusion
from skipdit.models import build_model
from skipdit.train import load_config, train
from skipdit.train.ema import make_ema, update_ema_
from skipdit.train.recipe import apply_stage


def digits_throughput(steps: int, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("configs/digits/skip-dit.yaml", [f"run_dir={tmp}", f"steps={steps}", "log_every=10",
                                                            f"ckpt_every={steps}", f"device={device}"])
        train(cfg, progress=False)
        records = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    timed = records[1:]  # the first window includes warm-up
    return {"samples_per_sec": sum(r["samples_per_sec"] for r in timed) / len(timed), "batch": cfg.global_batch}


def xl_throughput(batch: int, steps: int, device: str, precision: str, grad_checkpointing: bool) -> dict:
    torch.manual_seed(0)
    model = build_model("DiT-XL/2-skip").to(device).train()
    model.gradient_checkpointing = grad_checkpointing
    params = apply_stage(model, "full")
    ema = make_ema(model)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0)
    diffusion = GaussianDiffusion.create(None)
    x0 = torch.randn(batch, 4, 32, 32, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for _ in range(steps + 1):  # the first step is warm-up
        start = time.perf_counter()
        i = torch.randint(0, 1000, (batch,), device=device)
        with autocast:
            loss = diffusion.training_losses(lambda xt, t: model(xt, t, y), x0, i)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_ema_(ema, model, 0.9999)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    per_step = sum(times[1:]) / steps
    return {"samples_per_sec": batch / per_step, "seconds_per_step": per_step, "batch": batch,
            "precision": precision, "grad_checkpointing": grad_checkpointing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("digits", "xl"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--digits-steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=None, help="XL batch (default: 2 on CPU, 32 on CUDA)")
    parser.add_argument("--steps", type=int, default=3, help="timed XL steps")
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args()
    on_cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name() if on_cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}, torch {torch.__version__}")
    if args.only in (None, "digits"):
        print("digits recipe:", json.dumps(digits_throughput(args.digits_steps, args.device)), flush=True)
    if args.only in (None, "xl"):
        batch = args.batch or (32 if args.device.startswith("cuda") else 2)
        precisions = ("fp32", "bf16") if args.device.startswith("cuda") else ("fp32",)
        for precision in precisions:
            result = xl_throughput(batch, args.steps, args.device, precision, args.grad_checkpointing)
            print("DiT-XL/2-skip:", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
