"""``train_and_evaluate(config, workdir)``: the training loop that the CLI runs.

It checks the config, builds data, model, optimizer and the compiled steps from it, locks
``workdir``, resumes from the newest intact checkpoint there (or initialises, fitting any
data-dependent parameters), trains with periodic logging, evaluation (of the trained weights
and their moving average, on every eval split) and checkpoints, stops on a signal or a
non-finite loss, and writes the final metrics to ``workdir/results.json``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import os
import signal
import subprocess
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import data, hardware, models
from jaxcnn.config import check_config
from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.models import conv
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.optim import check_names, make_optimizer, make_schedule
from jaxcnn.training.parallel import make_parallel, to_host, tree_add
from jaxcnn.training.state import init_train_state
from jaxcnn.training.step import (
    check_tta,
    ema_decay_schedule,
    make_eval_step,
    make_train_step,
    scan_steps,
    steps_per_dispatch,
)
from jaxcnn.training.workdir import WorkdirLock, check_free_space, prepare_workdir
from jaxcnn.training.writers import CONFIG_FILE, RESULTS_FILE, MetricWriter, console

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_model(
    config: ml_collections.ConfigDict, num_classes: int, bn_axis_name: str | None = None
) -> nn.Module:
    """The model of ``config.model``: its name, dtype, and any further constructor fields."""
    fields = {k: v for k, v in config.items() if k not in ("name", "dtype")}
    if config.dtype not in _DTYPES:
        raise unknown_choice("model.dtype", config.dtype, _DTYPES)
    spec = models.get_spec(config.name)
    if bn_axis_name and "bn_axis_name" in spec.module.__dataclass_fields__:
        fields["bn_axis_name"] = bn_axis_name
    return models.create(config.name, num_classes, dtype=_DTYPES[config.dtype], **fields)


def training_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
    """(steps per epoch, total training steps) for the global batch size."""
    steps_per_epoch = max(1, num_train_examples // config.batch_size)
    if config.num_train_steps > 0:
        return steps_per_epoch, config.num_train_steps
    return steps_per_epoch, max(1, math.ceil(config.num_epochs * steps_per_epoch))


class Interrupted(Exception):
    """Training stopped early by a signal (SIGTERM, SIGINT) after checkpointing its state."""

    def __init__(self, step: int, signum: int) -> None:
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; the checkpoint is saved "
            "and re-running the same command resumes from it"
        )
        self.step, self.signum = step, signum


class Diverged(Exception):
    """Training stopped because the loss became NaN or infinite; nothing non-finite was saved."""

    EXIT_STATUS = 3

    def __init__(self, step: int, loss: float, last_checkpoint: int | None) -> None:
        kept = (
            f"the last checkpoint (step {last_checkpoint}) is intact"
            if last_checkpoint
            else "no checkpoint was written"
        )
        super().__init__(
            f"training diverged: the loss is {loss} at step {step}; {kept}. Lower "
            "optimizer.learning_rate (or clip with optimizer.grad_clip_norm) and re-run; delete "
            "the checkpoints to start over"
        )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so that it is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _StopRequests:
    """Turns SIGTERM/SIGINT (preemption, Ctrl-C) into a flag the loop checks between steps.

    Only in a single process: with several, every process must stop at the same step, which
    JAX's own preemption notice agrees on (``Checkpointer.reached_preemption``), so its SIGTERM
    handler is left in place.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> _StopRequests:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _write_json_atomically(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(finite_json(payload), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _record_config(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> None:
    """Keep the config of every start: ``config.json``, or ``config.stepN.json`` if it changed."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
        path = os.path.join(workdir, f"config.step{start_step}.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def source_commit() -> str:
    """The git commit of the jaxcnn source that runs (with ``+`` if it has local changes), or
    '' outside a git checkout: results record what produced them."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "jaxcnn")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+" if dirty else "")


def every_steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """The interval ``name`` (``eval``, ``checkpoint``) in steps: ``{name}_every_epochs``
    converted when it is set, else ``{name}_every_steps``; 0 = off."""
    epochs = config[f"{name}_every_epochs"]
    if epochs:
        return max(1, int(round(epochs * steps_per_epoch)))
    return config[f"{name}_every_steps"]


def eval_splits(dataset: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """One dataset config per split of ``dataset.eval_split`` (comma-separated; '' = the
    preset's), in order: the first is the one results.json reports."""
    configs = []
    for split in dataset.eval_split.split(",") if dataset.eval_split else [""]:
        config = ml_collections.ConfigDict(dataset.to_dict())
        config.eval_split = split.strip()
        configs.append(config)
    return configs


class Profiler:
    """A ``jax.profiler`` trace of the steps ``START:STOP`` (``profile_steps``) under
    ``WORKDIR/profile``, each dispatch annotated with its first step."""

    def __init__(self, steps: str, workdir: str) -> None:
        self.start = self.stop = 0
        self.active = False
        self.path = os.path.join(workdir, "profile")
        if steps:
            start, _, stop = steps.partition(":")
            try:
                self.start, self.stop = int(start), int(stop)
            except ValueError:
                self.stop = -1
            if not 0 <= self.start < self.stop:
                raise UserError(f"profile_steps={steps!r} is not START:STOP with 0 <= START < STOP")

    @property
    def boundaries(self) -> list[int]:
        """Steps that a dispatch must end on."""
        return [self.start, self.stop] if self.stop else []

    def before(self, step: int) -> None:
        if self.stop and step == self.start:
            jax.profiler.start_trace(self.path)
            self.active = True

    def annotate(self, step: int) -> Any:
        """A step annotation while tracing; nothing on the other steps."""
        if not self.active:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after(self, step: int, state: Any) -> None:
        if self.active and step >= self.stop:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            console(f"Profile of steps {self.start}:{self.stop} written to {self.path}.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train and evaluate as ``config`` says, in ``workdir``; returns the final results."""
    started = time.perf_counter()
    check_config(config)
    parallel = make_parallel(config.parallelism, shard_params=config.shard_params)
    conv.set_impl(config.conv_impl)
    check_names(config)
    models.get_spec(config.model.name)  # the names first: they need no data
    parallel.check_batch_size("batch_size", config.batch_size)
    parallel.check_batch_size("eval_batch_size", config.eval_batch_size)
    per_dispatch = steps_per_dispatch(config.steps_per_dispatch)
    ema_decay_schedule(config.ema.decay, config.ema.warmup, 1)  # checks the warm-up's name
    check_tta(config.eval_tta)
    if (config.batch_size // jax.device_count()) % config.optimizer.accum_steps:
        raise UserError(
            f"optimizer.accum_steps={config.optimizer.accum_steps} does not divide each "
            f"device's batch of {config.batch_size // jax.device_count()}; use a batch_size "
            f"that does"
        )
    profiler = Profiler(config.profile_steps, workdir)
    eval_datasets = eval_splits(config.dataset)
    dataset = eval_datasets[0]  # trains on the train split; its eval split is the reported one
    info = data.dataset_info(dataset)
    model = build_model(config.model, info.num_classes, parallel.axis_name)
    steps_per_epoch, total_steps = training_steps(config, info.num_train_examples)
    eval_every = every_steps(config, "eval", steps_per_epoch)
    checkpoint_every = every_steps(config, "checkpoint", steps_per_epoch)
    schedule = make_schedule(
        config.schedule,
        peak=config.optimizer.learning_rate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    tx = make_optimizer(config, schedule)

    prepare_workdir(workdir)
    lock = WorkdirLock(workdir)  # one run per workdir
    checkpointer = writer = None
    try:
        use_ema = config.ema.decay > 0
        init_fn = functools.partial(
            init_train_state, model, tx, info.image_shape, config.seed, ema=use_ema
        )
        abstract_state = jax.eval_shape(init_fn)
        checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
        start_step, restored = checkpointer.restore_latest(
            parallel.checkpoint_target(abstract_state), report=console
        )
        if start_step:
            state = parallel.from_checkpoint(restored)
            console(f"Resuming from the checkpoint at step {start_step}.")
        elif hasattr(model, "data_init"):  # parameters fitted to training images, e.g. whitening
            images = data.first_train_images(dataset, model.data_init_examples)
            fitted = model.data_init(images)
            state = parallel.init(functools.partial(init_fn, data_init_params=fitted))
            console(f"Initialised {', '.join(fitted)} from {len(images)} training images.")
        else:
            state = parallel.init(init_fn)
        if jax.process_index() == 0:
            _record_config(config, workdir, start_step)

        num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
        state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
        platform = jax.devices()[0].platform
        console(
            f"{config.model.name} ({num_params:,} parameters) on {info.name}: {total_steps} "
            f"steps of batch {config.batch_size} on {jax.device_count()} {platform} "
            f"device(s) in {jax.process_count()} process(es), {config.parallelism} parallelism, "
            f"{conv.impl_in_use()} convolutions, up to {per_dispatch} step(s) per dispatch."
        )

        step_fn = make_train_step(
            model,
            tx,
            schedule,
            label_smoothing=config.label_smoothing,
            aux_loss_weight=config.aux_loss_weight,
            axis_name=parallel.axis_name,
            accum_steps=config.optimizer.accum_steps,
            ema_decay_at=(
                ema_decay_schedule(config.ema.decay, config.ema.warmup, total_steps)
                if use_ema
                else None
            ),
            ema_every=config.ema.every_steps,
            ema_lookahead=config.ema.lookahead,
        )
        # Both compile on first use; single steps run only up to a step that logs, evaluates or
        # checkpoints, when fewer than per_dispatch steps are left before it.
        train_step = parallel.compile_train(step_fn)
        train_steps = parallel.compile_train(scan_steps(step_fn))
        intervals = [config.log_every_steps, eval_every, checkpoint_every]

        def steps_to_next_report(step: int) -> int:
            """Steps from ``step`` to the next one that logs, evaluates, checkpoints, starts or
            stops profiling, or ends."""
            ends = [total_steps] + [(step // n + 1) * n for n in intervals if n > 0]
            ends += [s for s in profiler.boundaries if s > step]
            return min(ends) - step

        eval_step = parallel.compile_eval(
            make_eval_step(model, axis_name=parallel.axis_name, tta=config.eval_tta)
        )

        def evaluate_weights(
            variables: dict[str, Any], eval_dataset: ml_collections.ConfigDict
        ) -> dict[str, float]:
            batches = data.eval_batches(
                eval_dataset, batch_size=config.eval_batch_size, shard_batch=parallel.shard_batch
            )
            totals = None
            for batch in batches:
                sums = eval_step(variables, batch)
                totals = sums if totals is None else tree_add(totals, sums)
            totals = parallel.metrics_to_host(totals)
            count = float(totals["count"])
            metrics = {
                "loss": float(totals["loss"]) / count,
                "accuracy": float(totals["correct"]) / count,
                "num_examples": count,
            }
            if "correct_top5" in totals:
                metrics["top5_accuracy"] = float(totals["correct_top5"]) / count
            return metrics

        def evaluate() -> dict[str, dict[str, float]]:
            """Metrics of every eval split by record name (``eval`` for the first, ``eval:SPLIT``
            for the others): the trained weights', and with EMA the average's as ``ema_*``."""
            results = {}
            for i, eval_dataset in enumerate(eval_datasets):
                metrics = evaluate_weights(state.variables(), eval_dataset)
                if use_ema:
                    ema = evaluate_weights(state.ema, eval_dataset)
                    metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "num_examples"})
                results["eval" if i == 0 else f"eval:{eval_dataset.eval_split}"] = metrics
            return results

        def log_evaluation(step: int) -> dict[str, dict[str, float]]:
            evaluations = evaluate()
            for name, metrics in evaluations.items():
                writer.write(step, name, metrics)
                ema_text = ""
                if use_ema:
                    ema_text = (
                        f" | EMA loss {metrics['ema_loss']:.4f} | "
                        f"EMA accuracy {metrics['ema_accuracy']:.4f}"
                    )
                console(
                    f"{name} at step {step}: loss {metrics['loss']:.4f} | "
                    f"accuracy {metrics['accuracy']:.4f}{ema_text} "
                    f"({int(metrics['num_examples'])} examples)"
                )
            return evaluations

        batches = data.train_batches(
            dataset,
            batch_size=config.batch_size,
            seed=config.seed,
            start_step=start_step,
            shard_batch=parallel.shard_batch,
        )
        writer = MetricWriter(workdir)
        pending: list[dict[str, jax.Array]] = []
        window_start, window_steps = time.perf_counter(), 0
        train_start = time.perf_counter()
        train_images_per_sec = float("nan")
        evaluations: dict[str, dict[str, float]] = {}
        with _StopRequests() as stop:
            step = start_step
            while step < total_steps:
                n = per_dispatch if steps_to_next_report(step) >= per_dispatch else 1
                profiler.before(step)
                with profiler.annotate(step):
                    if n > 1:
                        stacked = parallel.stack_batches([next(batches) for _ in range(n)])
                        state, metrics = train_steps(state, stacked)
                    else:
                        state, metrics = train_step(state, next(batches))
                first, step = step + 1, step + n
                profiler.after(step, state)
                pending.append(metrics)
                window_steps += n
                is_last = step == total_steps
                do_eval = is_last or (eval_every and step % eval_every == 0)
                # Every step number goes to the preemption check, so that all processes see the
                # step they agreed to stop at.
                preempted = [checkpointer.reached_preemption(s) for s in range(first, step + 1)]
                stopping = stop.signum is not None or any(preempted)
                do_checkpoint = (
                    is_last or stopping or bool(checkpoint_every and step % checkpoint_every == 0)
                )
                if (
                    do_eval
                    or do_checkpoint
                    or (config.log_every_steps and step % config.log_every_steps == 0)
                    or time.perf_counter() - window_start >= config.log_every_secs
                ):
                    host = parallel.metrics_to_host(pending)
                    now = (
                        time.perf_counter()
                    )  # after the fetch, which waits for the steps to finish
                    means = {
                        k: float(np.mean(np.concatenate([np.ravel(m[k]) for m in host])))
                        for k in host[0]
                    }
                    train_images_per_sec = window_steps * config.batch_size / (now - window_start)
                    means["images_per_sec"] = train_images_per_sec
                    writer.write(step, "train", means)
                    if not math.isfinite(means["loss"]):
                        raise Diverged(step, means["loss"], checkpointer.latest_step())
                    eta = (total_steps - step) * (now - window_start) / window_steps
                    console(
                        f"step {step}/{total_steps} | loss {means['loss']:.4f} | "
                        f"accuracy {means['accuracy']:.4f} | lr {means['learning_rate']:.4g} | "
                        f"{train_images_per_sec:,.0f} img/s | ETA {_format_duration(eta)}"
                    )
                    pending.clear()
                    # Save before evaluating: a failed evaluation must not lose the trained steps.
                    if do_checkpoint and to_host(_all_finite(state.params)):
                        check_free_space(workdir, state_bytes)
                        checkpointer.save(step, parallel.for_checkpoint(state))
                        if is_last:  # on disk before the final evaluation, which may fail
                            checkpointer.wait()
                    if do_eval:
                        evaluations = log_evaluation(step)
                    # Throughput windows exclude evaluation and checkpointing.
                    window_start, window_steps = time.perf_counter(), 0
                if stopping:
                    raise Interrupted(step, stop.signum or signal.SIGTERM)

        if not evaluations:  # nothing left to train: report the restored model
            evaluations = evaluate()
        results = {
            "model": config.model.name,
            "dataset": info.name,
            "num_params": num_params,
            "step": total_steps,
            "train_images_per_sec": train_images_per_sec,
            "train_time_sec": time.perf_counter() - train_start,
            "wall_time_sec": time.perf_counter() - started,
            "started_at_step": start_step,
            "hardware": hardware.summary(),
            "commit": source_commit(),
            **report_eval(evaluations.pop("eval")),
        }
        if evaluations:
            results["eval_splits"] = {name.split(":", 1)[1]: m for name, m in evaluations.items()}
        if jax.process_index() == 0:
            _write_json_atomically(os.path.join(workdir, RESULTS_FILE), results)
        console(
            f"Final eval accuracy {results['eval']['accuracy']:.4f} ({results['eval_weights']} "
            f"weights); results in {workdir}."
        )
        return results
    finally:  # waits for pending checkpoint saves, also when an error ends the run
        for resource in (writer, checkpointer, lock):
            if resource is not None:
                resource.close()


def report_eval(metrics: dict[str, float]) -> dict[str, Any]:
    """The results.json entries of final eval ``metrics``: ``eval`` holds those of the weights
    reported (the EMA's when there is one), ``eval_weights`` says which (``raw`` or ``ema``),
    and with EMA ``eval_raw`` holds the trained weights' own."""
    raw = {k: v for k, v in metrics.items() if not k.startswith("ema_")}
    if "ema_accuracy" not in metrics:
        return {"eval": raw, "eval_weights": "raw"}
    ema = {k[len("ema_") :]: v for k, v in metrics.items() if k.startswith("ema_")}
    ema["num_examples"] = raw["num_examples"]
    return {"eval": ema, "eval_weights": "ema", "eval_raw": raw}
