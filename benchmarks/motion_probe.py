"""Does a text-to-video model listen to the motion word? The denoising loss with the right caption against
the same caption with another motion word, at fixed noise levels.

For 64 real moving digits (a fixed seed), each t gets one noise draw; the eps-MSE is computed with the right
caption ("the digit 3 moves up"), with the other axis ("... to the left", motion id + 1 mod 4) and with the
opposite direction ("... down", id xor 1). A model that ignores the motion words shows +0 % in both columns.
This is how the built-in moving-digits/Latte-T2V-skip's stage-1 failure was found (docs/model-zoo.md).

    python benchmarks/motion_probe.py runs/moving-digits-latte-t2v-skip/checkpoints/ckpt-0009800.pt
    python benchmarks/motion_probe.py moving-digits/Latte-T2V-skip
"""

from __future__ import annotations

import argparse

import torch

from skipdit import load
from skipdit.convert.checkpoint import stored_text_encoder
from skipdit.datasets import caption, make_moving_digits
from skipdit.diffusion import GaussianDiffusion
from skipdit.text import load_text_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="built-in names, weight files or training checkpoints (EMA)")
    parser.add_argument("--timesteps", default="300,500,700,900")
    parser.add_argument("--videos", type=int, default=64)
    args = parser.parse_args()
    data = make_moving_digits(num_frames=8, canvas=16, per_class=10, copies=1)
    gen = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(data), generator=gen)[: args.videos]
    x0, digits, motions = data.videos[pick], data.labels[pick].tolist(), data.motions[pick].tolist()
    noise = torch.randn(x0.shape, generator=gen)
    diffusion = GaussianDiffusion.create(None)
    print("| model | t | eps-MSE, right caption | other axis | opposite direction |")
    print("|---|---|---|---|---|")
    for name in args.models:
        model = load(name)
        spec = stored_text_encoder(name) or {}
        encoder = load_text_encoder(spec.get("name"), max_length=spec.get("max_length"))
        captions = {
            "right": [caption(d, m) for d, m in zip(digits, motions)],
            "axis": [caption(d, (m + 1) % 4) for d, m in zip(digits, motions)],
            "opposite": [caption(d, m ^ 1) for d, m in zip(digits, motions)],
        }
        texts = {k: encoder.encode(v) for k, v in captions.items()}
        for t in (int(v) for v in args.timesteps.split(",")):
            i = torch.full((len(x0),), t)
            xt = diffusion.q_sample(x0, i, noise)
            loss = {}
            for k, (emb, mask) in texts.items():
                with torch.no_grad():
                    eps = model(xt, diffusion.model_timesteps(i), emb, mask)[:, : x0.shape[1]]
                loss[k] = (eps - noise).square().mean().item()
            print(f"| {name} | {t} | {loss['right']:.5f} | {loss['axis'] / loss['right'] - 1:+.1%} | "
                  f"{loss['opposite'] / loss['right'] - 1:+.1%} |", flush=True)


if __name__ == "__main__":
    main()
