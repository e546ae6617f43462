"""The options every sampling subcommand shares (``sample``, ``sample-many``, ``cache tune``, ``cache
calibrate-teacache``, ``bench``) and the one place that turns them into the library's settings:
:func:`model_request`, :func:`sampling_from`, :func:`runtime_from`, :func:`condition_from`.

Defaults are the library's (:class:`skipdit.sampling.Sampling`, :class:`~skipdit.sampling.Runtime`): an option a
user leaves out is ``None`` here and the dataclass fills it in, so no subcommand keeps a default of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import CACHE_FAMILIES, parse_cache
from ..diffusion import SAMPLER_CHOICES, SPACING_CHOICES
from ..diffusion.guidance import CFG_MODES
from ..distributed import check_device
from ..errors import UserError
from ..io import parse_int_list
from ..loading import Loaded, ModelRequest, check_task_options, load_for_sampling
from ..models.skip import SKIP_INITS
from ..protocol import TASKS
from ..sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, PRECISIONS, Condition, Runtime, Sampling
from .common import MAX_SEEDS, check_number, check_out_dir
from .help import DEVICE_HELP, MODEL_HELP, NO_PROGRESS_HELP

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def add_model_arguments(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--task", choices=TASKS, help="c2i: class-to-image, c2v: class-to-video, t2v: text-to-video, "
                   "t2i: text-to-image (the built-in model, or Hunyuan-DiT with --model-dir) (default: what --ckpt "
                   "holds; else c2i)")
    g.add_argument("--model-dir", help="t2i: a local diffusers HunyuanDiTPipeline folder")
    g.add_argument("--model", help=MODEL_HELP + "; with --ckpt or --random-weights: the architecture preset, "
                   "e.g. DiT-XL/2-skip (default: the built-in model of --task, or the architecture in --ckpt)")
    g.add_argument("--ckpt", help="official DiT / Latte .pt, a diffusers Latte folder, our .safetensors, or a "
                   "built-in name")
    g.add_argument("--random-weights", action="store_true",
                   help="no checkpoint: a pixel-space (RGB) --model with random weights, to try things out")
    g.add_argument("--skip-init", choices=SKIP_INITS, help="load a vanilla --ckpt into a -skip --model")
    g.add_argument("--vae", help="local diffusers AutoencoderKL folder (latent models)")
    g.add_argument("--text-encoder", help="text models: 'minilm' (built in) or a local T5 / CLIP folder "
                   "(default: the one the model was trained with, else minilm)")
    g.add_argument("--image-size", type=int, help="output image side in pixels (default: from the model)")


def add_sampling_arguments(p):
    s = p.add_argument_group("sampling")
    s.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7,10 (one sample per seed)")
    s.add_argument("--class-labels", help="labels, cycled over the seeds (default: sample k gets k mod classes)")
    s.add_argument("--prompt", action="append", help="text models: a prompt (repeat for several; cycled over "
                   "the seeds)")
    s.add_argument("--negative-prompt", default="", help="text models: the unconditional prompt")
    s.add_argument("--num-frames", type=int, help="video models: frames (default: the model's)")
    add_sampler_arguments(s)
    s.add_argument("--respacing", help="ddpm, ddim: timestep respacing, e.g. ddim50 (overrides --steps)")
    s.add_argument("--eta", type=float, default=Sampling.eta, help="DDIM eta")
    s.add_argument("--cfg-scale", type=float, help=f"classifier-free guidance scale (1 = off; default "
                   f"{DEFAULT_GUIDANCE:g}, off for unconditional models)")
    s.add_argument("--cfg-mode", choices=CFG_MODES, default=Sampling.guidance_mode,
                   help="all guides every channel; dit_legacy guides only 3, to reproduce the official DiT numbers")
    s.add_argument("--cfg-two-pass", action="store_true", help="run cond and uncond as two model calls")
    s.add_argument("--cache", help=f"cache spec, e.g. c2i:N=2 (families: {', '.join(CACHE_FAMILIES)}; default: "
                   "no cache)")
    return s


SAMPLER_HELP = ("ddpm, ddim (ADM's chain); dpm++2m, unipc (multistep solvers); euler, heun (EDM sigma space); "
                "diffusers:<Scheduler>, any scheduler of diffusers' DiTPipeline, e.g. "
                "diffusers:UniPCMultistepScheduler")
SPACING_HELP = ("step list of dpm++2m, unipc, euler, heun and diffusers: samplers, as diffusers names it "
                "(timestep_spacing; karras: Karras sigmas, rho 7) (default: linspace, or the scheduler's own)")


def add_sampler_arguments(group, *, default: str = Sampling.sampler, steps_type=int,
                          steps_help: str = "sampling steps") -> None:
    """``--sampler``, ``--steps`` and ``--spacing``, the names from the one registry of samplers."""
    group.add_argument("--sampler", choices=SAMPLER_CHOICES, default=default, metavar="SAMPLER",
                       help=f"{SAMPLER_HELP} (default {default})")
    steps = ", ".join(f"{n} for {name}" for name, n in DEFAULT_STEPS.items())
    group.add_argument("--steps", type=steps_type, help=f"{steps_help} (default {steps})")
    group.add_argument("--spacing", choices=SPACING_CHOICES, help=SPACING_HELP)


def add_runtime_arguments(p, *, batch_help: str = "samples per batch (default: all)", device_default=DEFAULT_DEVICE,
                          device_help: str = DEVICE_HELP):
    r = p.add_argument_group("runtime")
    r.add_argument("--batch-size", type=int, help=batch_help)
    r.add_argument("--device", default=device_default, help=device_help)
    r.add_argument("--precision", choices=list(PRECISIONS), default=Runtime.precision, help="autocast precision")
    r.add_argument("--compile", action="store_true", help="torch.compile each block")
    r.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    return r


def check_arguments(args) -> None:
    """The numbers, the device and the output folder of every command that samples, checked before a model loads:
    None means "the default", anything else must be valid (``--steps 0`` is an error, not the default), and a run
    never samples for minutes and then finds it cannot write."""
    for option, minimum in (("steps", 1), ("image_size", 1), ("num_frames", 1), ("batch_size", 1), ("fps", 1)):
        check_number(getattr(args, option, None), "--" + option.replace("_", "-"), minimum=minimum, integer=True)
    check_number(args.eta, "--eta", minimum=0)
    check_number(args.cfg_scale, "--cfg-scale", minimum=1)
    if args.eta and args.sampler != "ddim":
        raise UserError(f"--eta applies to the ddim sampler only, not --sampler {args.sampler}")
    if args.device != "auto":  # sample-many resolves "auto" itself
        check_device(args.device)
    if getattr(args, "out", None) is not None:
        check_out_dir(args.out)
    parse_cache(args.cache)  # a malformed spec fails here, not after the model and the text encoder load
    sampling_from(args)  # a malformed respacing, the same


def model_request(args) -> ModelRequest:
    if args.random_weights and args.ckpt:
        raise UserError("--random-weights and --ckpt exclude each other")
    ckpt, preset = ModelRequest(model=args.model, ckpt=args.ckpt, random_weights=args.random_weights).source()
    if args.random_weights and not preset:
        raise UserError("--random-weights needs --model, e.g. --model DiT-S/2-skip")
    if args.random_weights and args.vae:
        raise UserError("--random-weights builds a pixel-space model; drop --vae")
    if not ckpt and not args.random_weights and (preset or args.skip_init):
        raise UserError("--model and --skip-init need --ckpt PATH (or --random-weights)")
    return ModelRequest(task=args.task, model=args.model, ckpt=args.ckpt, random_weights=args.random_weights,
                        skip_init=args.skip_init, vae=args.vae, text_encoder=args.text_encoder,
                        image_size=args.image_size)


def check_task_flags(args, task: str) -> None:
    """Flags the model's task does not take, named as flags."""
    check_task_options(task, labels="--class-labels" if args.class_labels is not None else None,
                       prompts="--prompt and --negative-prompt" if args.prompt or args.negative_prompt else None,
                       num_frames="--num-frames" if args.num_frames is not None else None)


# Sampling field <- the option that sets it; a subcommand without the option (bench has no --respacing) gets
# the field's default
_SAMPLING_OPTIONS = {"sampler": "sampler", "steps": "steps", "respacing": "respacing", "spacing": "spacing",
                     "eta": "eta", "guidance_scale": "cfg_scale", "guidance_mode": "cfg_mode",
                     "num_frames": "num_frames"}


def sampling_from(args) -> Sampling:
    """The :class:`Sampling` of a subcommand's arguments: every subcommand that samples builds it here."""
    given = vars(args)
    fields = {name: given[option] for name, option in _SAMPLING_OPTIONS.items() if option in given}
    if "cfg_two_pass" in given:
        fields["batched_guidance"] = not given["cfg_two_pass"]
    return Sampling(**fields)


def runtime_from(args, **changes) -> Runtime:
    """The :class:`Runtime` of a subcommand's arguments (absent options keep the field's default), with
    ``changes``."""
    given = vars(args)
    fields = {name: given[name] for name in ("device", "precision", "compile", "batch_size") if name in given}
    if "no_progress" in given:
        fields["progress"] = not given["no_progress"]
    return Runtime(**{**fields, **changes})


@dataclass
class Settings:
    """What the sampling options ask for: the loaded model, and the condition, sampling and runtime settings."""

    loaded: Loaded
    condition: Condition
    sampling: Sampling
    runtime: Runtime


def load_settings(args, seeds: int) -> Settings:
    """The options checked (:func:`check_arguments`), then the model they name, loaded, and the settings of
    ``seeds`` samples."""
    check_arguments(args)
    loaded = load_for_sampling(model_request(args), args.device)
    return Settings(loaded, condition_from(args, loaded, seeds), sampling_from(args), runtime_from(args))


def condition_from(args, loaded: Loaded, seeds: int) -> Condition:
    """The labels or prompts of ``seeds`` samples from ``--class-labels`` / ``--prompt`` (the model's task
    checked first, so the message names the flags)."""
    check_task_flags(args, loaded.task)
    labels = parse_int_list(args.class_labels, "class labels", limit=MAX_SEEDS) if args.class_labels else None
    return loaded.condition(seeds, labels=labels, prompts=args.prompt, negative_prompt=args.negative_prompt)
