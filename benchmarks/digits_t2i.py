"""The built-in text-to-image model: does it draw the digit the prompt names, and what its one-frame
temporal blocks cost.

Accuracy is the digits evaluator's, on DDIM samples with guidance: the trained phrasings (each digit 5
times, cycling through ``DIGIT_CAPTIONS``) and a phrasing the model never saw ("number 7"). MACs are
counted with torch's FLOP counter (attention through the math kernel) for one forward of 2 samples,
with and without the temporal blocks.

    python benchmarks/digits_t2i.py                          # the shipped digits/T2I-Skip-DiT
    python benchmarks/digits_t2i.py --model run.safetensors  # e.g. skipdit export runs/digits-t2i-skip --step 3000
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from skipdit import Condition, Sampling, generate, load
from skipdit.convert.checkpoint import stored_text_encoder
from skipdit.datasets import DIGIT_CAPTIONS, digit_caption
from skipdit.metrics.digits import DigitsEvaluator
from skipdit.text import load_text_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits/T2I-Skip-DiT")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    args = parser.parse_args()
    model = load(args.model).eval()
    text = stored_text_encoder(args.model) or {}
    encoder = load_text_encoder(text.get("name"), max_length=text.get("max_length"))
    trained = [digit_caption(k % 10, k // 10 % len(DIGIT_CAPTIONS)) for k in range(50)]
    unseen = [f"number {k % 10}" for k in range(20)]
    out = generate(model, range(70), Condition(prompts=trained + unseen, text_encoder=encoder),
                   sampling=Sampling(sampler="ddim", steps=args.steps, guidance_scale=args.cfg_scale))
    wanted = torch.tensor([k % 10 for k in range(50)] + [k % 10 for k in range(20)])
    right = (DigitsEvaluator.load().predict(out.images) == wanted).float()
    print(f"{args.model}: DDIM-{args.steps}, guidance {args.cfg_scale}")
    print(f"trained phrasings: {right[:50].mean():.0%} of 50; unseen 'number N': {right[50:].mean():.0%} of 20")

    x = torch.randn(2, *model.sample_shape())
    t, emb = torch.tensor([500, 500]), torch.randn(2, 8, model.config.caption_channels)
    flops = {}
    for temporal in (True, False):
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            model(x, t, emb, temporal=temporal)
        flops[temporal] = counter.get_total_flops()
    print(f"GFLOPs per forward of 2 samples: {flops[True] / 1e9:.3f} with the temporal blocks, "
          f"{flops[False] / 1e9:.3f} without ({1 - flops[False] / flops[True]:.0%} in them)")


if __name__ == "__main__":
    main()
