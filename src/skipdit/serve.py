"""The Gradio demo behind ``skipdit serve``: Skip-Cache against the uncached run, in a browser.

    models = Models(device="cpu")                        # the built-in models, loaded when first asked for
    print(plan_strip(models, "digits/Skip-DiT", "skip:N=2", "ddim", 10))    # HTML: one cell per step
    run = run_request(models, Request("digits/Skip-DiT", "3", "skip:N=2", "0-1", "ddim", 10), "out/")
    print(run.stats["measured_speedup"], run.cached_image)
    launch(models, host="127.0.0.1", port=7860)          # the page, until interrupted

The page's work is done by the plain functions :func:`plan_strip` and :func:`run_request`, tested without a
browser; :func:`build_app` only lays them out. A request runs through :func:`skipdit.sample_job.sample_to_folder`,
as ``skipdit sample --compare-uncached`` does: a warm-up of both runs, then :data:`REPEATS` interleaved timed
rounds, so the speed-up shown is measured the same way. Bad input raises :class:`~skipdit.errors.UserError`,
whose one line the page shows.
"""

from __future__ import annotations

import html
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .assets import BUILTIN_MODELS, DEFAULT_MODEL
from .cache import parse_cache
from .cache.families import plan_offline
from .diffusion import SAMPLERS
from .errors import UserError
from .io import parse_int_list
from .loading import TEXT_TASKS, Loaded, ModelRequest, load_for_sampling
from .metrics import ssim
from .sample_job import sample_to_folder, write_report
from .sampling import DEFAULT_GUIDANCE, Runtime, Sampling
from .savings import no_saving_reason

# The most denoising steps one request may ask for, seeds x steps x frames: 64 images at DDPM-250, or 8 videos
# of 8 frames at 250 steps. One request holds the server (one at a time), so it must end in reasonable time;
# more belongs to `skipdit sample`.
MAX_WORK = 64 * 250
REPEATS = 3  # timed rounds of each run, as `skipdit sample --compare-uncached`
FPS = 8  # of the gifs of video models
NEEDS_GRADIO = "skipdit serve needs gradio: pip install 'skipdit[demo]'"
DEFAULTS = dict(condition="", cache="skip:N=2", seeds="0-7", sampler="ddim", steps=50)

Progress = Callable[[float, str], None]  # (fraction done, what is running)


class Models:
    """The models a server offers, each loaded once, when first asked for: the built-in ones, and ``extra``
    (name -> :class:`ModelRequest`, e.g. a checkpoint given with ``--ckpt``)."""

    def __init__(self, extra: dict[str, ModelRequest] | None = None, device: str = "cpu"):
        self.requests = {name: ModelRequest(model=name) for name in BUILTIN_MODELS}
        self.requests.update(extra or {})
        self.device = device
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()  # the page loads a model for its plan while a request may be sampling

    @property
    def names(self) -> list[str]:
        return list(self.requests)

    def get(self, name: str) -> Loaded:
        if name not in self.requests:
            raise UserError(f"unknown model {name!r}; valid: {', '.join(self.requests)}")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_for_sampling(self.requests[name], self.device)
            return self._loaded[name]


@dataclass(frozen=True)
class Request:
    """One request as the page and the API take it, all text but ``steps`` and ``guidance``: ``condition`` is
    class labels (``"3"``, ``"1,2"``, cycled over the seeds) or a prompt, empty for the model's default;
    ``cache`` is a spec, empty for none; ``seeds`` as ``skipdit sample --seeds`` (``"0-3,7"``); ``guidance``
    ``None`` for the default scale."""

    model: str
    condition: str
    cache: str
    seeds: str
    sampler: str
    steps: int | float
    guidance: float | None = None

    def sampling(self) -> Sampling:
        steps = self.steps
        if isinstance(steps, float) and steps.is_integer():  # a number box gives 10.0
            steps = int(steps)
        return Sampling(sampler=self.sampler, steps=steps, guidance_scale=self.guidance)


@dataclass
class Run:
    """What :func:`run_request` made: the grids (PNG, or GIF for videos) of the cached and the uncached run
    (``cached_image`` is ``None`` without a cache), the numbers, and the files to download."""

    cached_image: Path | None
    uncached_image: Path
    stats: dict
    downloads: list[Path]


def plan(loaded: Loaded, cache, sampling: Sampling):
    """The :class:`~skipdit.cache.families.OfflinePlan` of ``cache`` (a spec or a policy) on the model over the
    timesteps ``sampling`` evaluates; ``None`` without a cache or for a policy that decides while sampling."""
    policy = parse_cache(cache)
    if policy is None or policy.decides_at_run_time:
        return None
    policy.check_model(loaded.model)
    return plan_offline(policy, loaded.model.num_units, sampler=sampling.sampler, steps=sampling.num_steps,
                        spacing=sampling.spacing)


# the colour of each kind of step: every unit, some units, none (a whole-step reuse, e.g. taylor's mask letter R)
COLOURS = {"full": "#1f6feb", "cached": "#7ee2a8", "reuse": "#f2cc60"}


def step_kind(step) -> str:
    return "full" if step.full else "cached" if step.units else "reuse"


def plan_strip(models: Models, model: str, cache: str, sampler: str, steps) -> str:
    """The plan of ``cache`` as HTML: one cell per step (``class="skipdit-step full"``, ``"... cached"`` or
    ``"... reuse"`` for a step that runs no unit, its title the timestep and the units run), then the counts; a bad
    input gives its one line instead."""
    try:
        loaded = models.get(model)
        sampling = Request(model, "", cache, "0", sampler, steps).sampling()
        offline = plan(loaded, cache, sampling)
        policy = parse_cache(cache)
    except UserError as err:
        return f'<p class="skipdit-error">{html.escape(str(err))}</p>'
    if policy is None:
        return f"<p>No cache: all {sampling.num_steps} steps run every unit.</p>"
    if offline is None:
        return (f"<p>{html.escape(policy.spec())} decides each step while sampling, from what the model computes: "
                "the steps it cached are counted after the run.</p>")
    side = max(2, min(18, 480 // len(offline.steps)))  # one row in the page's column up to 120 steps
    cells = []
    for k, step in enumerate(offline.steps):
        units = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in step.units) or "none"
        what = step_kind(step)
        reuse = f", reusing {', '.join(step.reuse)}" if step.reuse else ""
        cells.append(f'<span class="skipdit-step {what}" title="step {k}, t={step.t}: {what}, units {units}{reuse}" '
                     f'style="display:inline-block;width:{side}px;height:18px;margin:0 1px 1px 0;'
                     f'background:{COLOURS[what]}"></span>')
    stats = offline.stats
    reason = no_saving_reason(stats, offline.policy)
    warning = f'<p class="skipdit-error">saves nothing on this model: {html.escape(reason)}</p>' if reason else ""
    shown = {step_kind(step) for step in offline.steps} | {"full", "cached"}
    legend = " &nbsp; ".join(f'<span style="color:{COLOURS[kind]}">&#9632;</span> {kind} step'
                             for kind in COLOURS if kind in shown) + " (hover a cell: its timestep and units)"
    return (f'<div class="skipdit-plan"><div style="line-height:0">{"".join(cells)}</div>'
            f"<p>{html.escape(offline.policy.spec())} on {offline.units} units, {sampling.sampler_name} "
            f"{len(offline.steps)} steps: {html.escape(stats.summary())}</p><p>{legend}</p>{warning}</div>")


def run_request(models: Models, request: Request, out, progress: Progress | None = None) -> Run:
    """Sample ``request`` with its cache and without (timed interleaved, after a warm-up): the grids, every sample
    and ``run.json`` in ``out/outputs/`` (the uncached ones in ``uncached/``), and ``out/outputs.zip`` of them
    all. ``progress(fraction, text)`` follows the steps."""
    sampling = request.sampling()
    policy = parse_cache(request.cache)  # a malformed spec fails before the model loads
    seeds = parse_int_list(request.seeds, "seeds", limit=MAX_WORK)
    loaded = models.get(request.model)
    plan(loaded, policy, sampling)  # a cache the model cannot take, or a step list it cannot plan on, fails here
    frames = sampling.num_frames or loaded.model.num_frames or 1
    work = len(seeds) * sampling.num_steps * frames
    if work > MAX_WORK:
        raise UserError(f"this request is {len(seeds)} seeds x {sampling.num_steps} steps x {frames} frames = "
                        f"{work:,} denoising steps; the demo takes at most {MAX_WORK:,} per request (64 seeds x "
                        f"250 steps of an image model), so that one request cannot hold the server for long: "
                        "use fewer seeds or steps, or skipdit sample")
    condition = loaded.condition(len(seeds), **_condition(loaded, request.condition))
    out = Path(out) / "outputs"
    job = sample_to_folder(loaded, seeds, condition, out, sampling=sampling, runtime=Runtime(device=models.device),
                           cache=policy, compare=policy is not None, repeats=REPEATS, formats=("gif",), fps=FPS,
                           callback=_step_counter(progress, policy, sampling, len(seeds)))
    grid = "grid.gif" if job.result.is_video else "grid.png"
    stats = _stats(request, job)
    report = json.loads(job.report.read_text())
    report["serve"] = {"request": vars(request), **stats}
    write_report(job.report, report)
    archive = Path(shutil.make_archive(str(out), "zip", out))
    if job.comparison is None:
        return Run(None, out / grid, stats, [archive, job.report])
    return Run(out / grid, out / "uncached" / grid, stats, [archive, job.report])


def _condition(loaded: Loaded, text: str) -> dict:
    """The keyword arguments of :meth:`Loaded.condition` for the condition box: a prompt, or class labels."""
    text = text.strip()
    if not text:
        return {}
    if loaded.task in TEXT_TASKS:
        return {"prompts": [text]}
    try:
        return {"labels": parse_int_list(text, "class labels", limit=MAX_WORK)}
    except UserError:
        raise UserError(f"this is a {loaded.task} model: the condition is class labels such as 3 or 1,2 (or empty "
                        f"for 0, 1, 2, ...), not {text!r}") from None


def _step_counter(progress: Progress | None, policy, sampling: Sampling, seeds: int):
    """A :func:`skipdit.generate` callback that reports the fraction of all steps done: the two warm-ups and
    :data:`REPEATS` rounds of both runs with a cache, one run without."""
    if progress is None:
        return None
    runs = [sampling.warm_up().num_steps] * 2 + [sampling.num_steps] * 2 * REPEATS if policy else [sampling.num_steps]
    total, done = sum(runs), [0]

    def step(k, x, x0):
        done[0] += 1
        progress(done[0] / total, f"sampling {seeds} seeds: step {done[0]} of {total} (all runs)")

    return step


def _stats(request: Request, job) -> dict:
    """The numbers the page and the API show."""
    result, comparison = job.result, job.comparison
    stats = {"model": request.model, "cache": result.cache, "seeds": result.seeds,
             "sampler": request.sampling().sampler_name, "steps": result.stats.steps,
             "full_steps": result.stats.full_steps, "cached_steps": result.stats.cached_steps,
             "ideal_speedup": result.stats.ideal_speedup}
    if comparison is None:
        return {**stats, "seconds": result.seconds}
    timed = comparison.timed
    similarity = ssim(comparison.cached.images, comparison.uncached.images)
    return {**stats, "measured_speedup": comparison.speedup, "cached_seconds": timed.median("cached"),
            "uncached_seconds": timed.median("uncached"), "repeats": REPEATS,
            "psnr": _finite(comparison.psnr.mean()), "psnr_min": _finite(comparison.psnr.min()),
            "ssim": similarity.mean().item()}


def _finite(value) -> float | str:
    """A PSNR for JSON: identical outputs give ``inf``, written as the string ``"inf"``."""
    value = float(value)
    return value if value != float("inf") else "inf"


def summary(stats: dict) -> str:
    """The result in one Markdown paragraph."""
    counts = f"{stats['full_steps']} full / {stats['cached_steps']} cached steps of {stats['steps']}"
    if "measured_speedup" not in stats:
        return f"No cache: {counts}, {stats['seconds']:.2f} s."
    psnr = stats["psnr"] if isinstance(stats["psnr"], str) else f"{stats['psnr']:.2f}"
    return (f"**Measured speed-up {stats['measured_speedup']:.2f}x** (ideal {stats['ideal_speedup']:.2f}x; median "
            f"of {stats['repeats']} interleaved rounds: cached {stats['cached_seconds']:.3f} s, uncached "
            f"{stats['uncached_seconds']:.3f} s) · PSNR {psnr} dB · SSIM {stats['ssim']:.4f} · {counts} "
            f"(`{stats['cache']}`)")


def build_app(models: Models, work_dir, default: str = DEFAULT_MODEL):
    """The page: the inputs (``default`` the model selected first), the plan strip, the two outputs and the
    numbers; every sampling event runs one at a time (``concurrency_limit=1``). The API endpoint ``generate``
    takes ``model, condition, cache, seeds, sampler, steps`` and returns the cached image, the uncached image
    and the numbers. Outputs go to ``work_dir``."""
    gr = _gradio()
    tracker = gr.Progress()  # Gradio replaces a parameter whose default is a Progress by the bar of its event

    def run(request: Request, progress) -> Run:
        out = tempfile.mkdtemp(prefix="run-", dir=work_dir)
        try:
            return run_request(models, request, out, lambda f, text: progress(f, desc=text))
        except UserError as err:
            raise gr.Error(" ".join(str(err).split())) from None

    def page(model, condition, cache, seeds, sampler, steps, guidance, progress=tracker):
        done = run(Request(model, condition, cache, seeds, sampler, steps, guidance), progress)
        return *_paths(done), summary(done.stats), done.stats, [str(path) for path in done.downloads]

    def generate(model, condition, cache, seeds, sampler, steps, progress=tracker):
        """Sample with the cache and without; returns the cached grid, the uncached grid and the numbers."""
        done = run(Request(model, condition, cache, seeds, sampler, steps), progress)
        return *_paths(done), done.stats

    def strip(model, cache, sampler, steps):
        return plan_strip(models, model, cache, sampler, steps)

    with gr.Blocks(title="skipdit: Skip-Cache demo", analytics_enabled=False) as app:
        gr.Markdown("# Skip-Cache demo\nSample with a cache and without it, on the same seeds: the two outputs "
                    "side by side, the measured and the ideal speed-up, and how close they are (PSNR, SSIM).")
        with gr.Row():
            with gr.Column():
                model = gr.Radio(models.names, value=default, label="model", elem_id="model")
                condition = gr.Textbox(DEFAULTS["condition"], label="condition", elem_id="condition",
                                       placeholder="class labels such as 3 or 1,2 (empty: 0, 1, 2, ...); a prompt "
                                       "for text models")
                cache = gr.Textbox(DEFAULTS["cache"], label="cache", elem_id="cache",
                                   info="skip:N=2, c2i:N=2, fora:N=3, teacache:threshold=0.1 ...; empty for none")
                seeds = gr.Textbox(DEFAULTS["seeds"], label="seeds", elem_id="seeds", info="e.g. 0-7,10")
                with gr.Row():
                    sampler = gr.Dropdown(list(SAMPLERS), value=DEFAULTS["sampler"], label="sampler",
                                          allow_custom_value=True, elem_id="sampler",
                                          info="or diffusers:<Scheduler>")
                    steps = gr.Number(DEFAULTS["steps"], precision=0, label="steps", elem_id="steps")
                    guidance = gr.Number(DEFAULT_GUIDANCE, label="guidance scale", elem_id="guidance",
                                         info="1: off (for unconditional models)")
                button = gr.Button("Sample with and without the cache", variant="primary", elem_id="run")
            with gr.Column():
                gr.Markdown("**Cache plan**, one cell per step")
                strip_html = gr.HTML(elem_id="plan")
                with gr.Row():
                    cached = gr.Image(type="filepath", label="with the cache", elem_id="cached")
                    uncached = gr.Image(type="filepath", label="without", elem_id="uncached")
                result = gr.Markdown(elem_id="summary")
                files = gr.File(label="downloads: outputs.zip, run.json", file_count="multiple", elem_id="files")
                with gr.Accordion("the numbers, as the API returns them", open=False):
                    numbers = gr.JSON(label="numbers", elem_id="numbers")
        planned = dict(fn=strip, inputs=[model, cache, sampler, steps], outputs=strip_html, api_visibility="private",
                       concurrency_id="plan", concurrency_limit=None)
        for box in (model, cache, sampler, steps):
            box.change(**planned)
        app.load(**planned)
        button.click(page, inputs=[model, condition, cache, seeds, sampler, steps, guidance],
                     outputs=[cached, uncached, result, numbers, files], api_visibility="private",
                     concurrency_id="sample", concurrency_limit=1)
        # the API's own event, on a button the page does not show: its parameters are exactly generate's
        gr.Button(visible=False).click(generate, inputs=[model, condition, cache, seeds, sampler, steps],
                                       outputs=[cached, uncached, numbers], api_name="generate",
                                       concurrency_id="sample", concurrency_limit=1)
    return app


def _paths(run: Run) -> tuple[str | None, str]:
    """The two images as Gradio takes files: strings."""
    return (None if run.cached_image is None else str(run.cached_image)), str(run.uncached_image)


def _gradio():
    try:
        import gradio
    except ImportError:
        raise UserError(NEEDS_GRADIO) from None
    return gradio


def launch(models: Models, host: str = "127.0.0.1", port: int = 7860, default: str = DEFAULT_MODEL) -> None:
    """Serve the page on ``host:port`` until interrupted; ``default`` is the model selected first (loaded now,
    so a bad checkpoint fails before the server starts)."""
    gr = _gradio()
    _check_free(host, port)
    models.get(default)
    with tempfile.TemporaryDirectory(prefix="skipdit-serve-") as work_dir:
        app = build_app(models, work_dir, default)
        # system fonts: the default theme would fetch its fonts from the internet
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])
        app.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, allowed_paths=[work_dir],
                                                      ssr_mode=False, theme=theme)


def _check_free(host: str, port: int) -> None:
    """``host:port`` can be listened on (Gradio's own message for a busy port is a traceback)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
