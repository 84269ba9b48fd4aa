"""``train_and_evaluate(config, workdir)``: the training loop that the CLI runs.

It builds data, model, optimizer and the compiled steps from the config, resumes from the
latest checkpoint in ``workdir`` if there is one, trains with periodic logging, evaluation and
checkpoints, and writes the final test metrics to ``workdir/results.json``.
"""

from __future__ import annotations

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
from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.models import conv
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.optim import check_names, make_optimizer, make_schedule
from jaxcnn.training.parallel import make_parallel, tree_add
from jaxcnn.training.state import init_train_state
from jaxcnn.training.step import (
    check_tta,
    ema_decay_schedule,
    make_eval_step,
    make_train_step,
    scan_steps,
    steps_per_dispatch,
)
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
        json.dump(payload, f, indent=2, sort_keys=True)
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


def _check_ema(config: ml_collections.ConfigDict) -> None:
    ema = config.ema
    if not 0.0 <= ema.decay < 1.0:
        raise UserError(f"ema.decay={ema.decay} is out of range; valid: 0 (off) to below 1")
    if ema.every_steps < 1:
        raise UserError(f"ema.every_steps={ema.every_steps} must be 1 or more")
    ema_decay_schedule(ema.decay, ema.warmup, 1)  # checks the warm-up's name


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train and evaluate as ``config`` says, in ``workdir``; returns the final results."""
    started = time.perf_counter()
    parallel = make_parallel(config.parallelism, shard_params=config.shard_params)
    conv.set_impl(config.conv_impl)
    check_names(config)
    models.get_spec(config.model.name)  # the names first: they need no data
    parallel.check_batch_size("batch_size", config.batch_size)
    parallel.check_batch_size("eval_batch_size", config.eval_batch_size)
    per_dispatch = steps_per_dispatch(config.steps_per_dispatch)
    _check_ema(config)
    check_tta(config.eval_tta)
    info = data.dataset_info(config.dataset)
    model = build_model(config.model, info.num_classes, parallel.axis_name)
    steps_per_epoch, total_steps = training_steps(config, info.num_train_examples)
    schedule = make_schedule(
        config.schedule,
        peak=config.optimizer.learning_rate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    tx = make_optimizer(config, schedule)

    os.makedirs(workdir, exist_ok=True)
    use_ema = config.ema.decay > 0
    init_fn = functools.partial(
        init_train_state, model, tx, info.image_shape, config.seed, ema=use_ema
    )
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        target = parallel.checkpoint_target(jax.eval_shape(init_fn))
        state = parallel.from_checkpoint(checkpointer.restore(start_step, target))
        console(f"Resuming from the checkpoint at step {start_step}.")
    elif hasattr(model, "data_init"):  # parameters fitted to training images, e.g. whitening
        images = data.first_train_images(config.dataset, model.data_init_examples)
        fitted = model.data_init(images)
        state = parallel.init(functools.partial(init_fn, data_init_params=fitted))
        console(f"Initialised {', '.join(fitted)} from {len(images)} training images.")
    else:
        state = parallel.init(init_fn)
    if jax.process_index() == 0:
        _record_config(config, workdir, start_step)

    num_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(init_fn).params))
    console(
        f"{config.model.name} ({num_params:,} parameters) on {info.name}: {total_steps} steps of "
        f"batch {config.batch_size} on {jax.device_count()} {jax.devices()[0].platform} "
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
    intervals = [config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps]

    def steps_to_next_report(step: int) -> int:
        """Steps from ``step`` to the next one that logs, evaluates, checkpoints or ends."""
        return min([total_steps] + [(step // n + 1) * n for n in intervals if n > 0]) - step

    eval_step = parallel.compile_eval(
        make_eval_step(model, axis_name=parallel.axis_name, tta=config.eval_tta)
    )

    def evaluate_weights(variables: dict[str, Any]) -> dict[str, float]:
        batches = data.eval_batches(
            config.dataset, batch_size=config.eval_batch_size, shard_batch=parallel.shard_batch
        )
        totals = None
        for batch in batches:
            sums = eval_step(variables, batch)
            totals = sums if totals is None else tree_add(totals, sums)
        totals = parallel.metrics_to_host(totals)
        count = float(totals["count"])
        return {
            "loss": float(totals["loss"]) / count,
            "accuracy": float(totals["correct"]) / count,
            "num_examples": count,
        }

    def evaluate() -> dict[str, float]:
        """Metrics of the trained weights, and with EMA those of the average as ``ema_*``."""
        metrics = evaluate_weights(state.variables())
        if use_ema:
            ema = evaluate_weights(state.ema)
            metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "num_examples"})
        return metrics

    batches = data.train_batches(
        config.dataset,
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
    eval_metrics: dict[str, float] = {}
    with _StopRequests() as stop:
        step = start_step
        while step < total_steps:
            n = per_dispatch if steps_to_next_report(step) >= per_dispatch else 1
            if n > 1:
                stacked = parallel.stack_batches([next(batches) for _ in range(n)])
                state, metrics = train_steps(state, stacked)
            else:
                state, metrics = train_step(state, next(batches))
            first, step = step + 1, step + n
            pending.append(metrics)
            window_steps += n
            is_last = step == total_steps
            do_eval = is_last or (config.eval_every_steps and step % config.eval_every_steps == 0)
            # Every step number goes to the preemption check, so that all processes see the
            # step they agreed to stop at.
            preempted = [checkpointer.reached_preemption(s) for s in range(first, step + 1)]
            stopping = stop.signum is not None or any(preempted)
            do_checkpoint = is_last or stopping or step % config.checkpoint_every_steps == 0
            if (
                do_eval
                or do_checkpoint
                or step % config.log_every_steps == 0
                or time.perf_counter() - window_start >= config.log_every_secs
            ):
                host = parallel.metrics_to_host(pending)
                now = time.perf_counter()  # after the fetch, which waits for the steps to finish
                means = {
                    k: float(np.mean(np.concatenate([np.ravel(m[k]) for m in host])))
                    for k in host[0]
                }
                train_images_per_sec = window_steps * config.batch_size / (now - window_start)
                means["images_per_sec"] = train_images_per_sec
                writer.write(step, "train", means)
                eta = (total_steps - step) * (now - window_start) / window_steps
                console(
                    f"step {step}/{total_steps} | loss {means['loss']:.4f} | "
                    f"accuracy {means['accuracy']:.4f} | lr {means['learning_rate']:.4g} | "
                    f"{train_images_per_sec:,.0f} img/s | ETA {_format_duration(eta)}"
                )
                pending.clear()
                if do_eval:
                    eval_metrics = evaluate()
                    writer.write(step, "eval", eval_metrics)
                    ema_text = (
                        f" | EMA loss {eval_metrics['ema_loss']:.4f} | "
                        f"EMA accuracy {eval_metrics['ema_accuracy']:.4f}"
                        if use_ema
                        else ""
                    )
                    console(
                        f"eval at step {step}: loss {eval_metrics['loss']:.4f} | "
                        f"accuracy {eval_metrics['accuracy']:.4f}{ema_text} "
                        f"({int(eval_metrics['num_examples'])} examples)"
                    )
                if do_checkpoint:
                    checkpointer.save(step, parallel.for_checkpoint(state))
                # Throughput windows exclude evaluation and checkpointing.
                window_start, window_steps = time.perf_counter(), 0
            if stopping:
                checkpointer.close()
                writer.close()
                raise Interrupted(step, stop.signum or signal.SIGTERM)
    checkpointer.close()
    writer.close()

    if not eval_metrics:  # nothing left to train: report the restored model
        eval_metrics = evaluate()
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
        **report_eval(eval_metrics),
    }
    if jax.process_index() == 0:
        _write_json_atomically(os.path.join(workdir, RESULTS_FILE), results)
    console(
        f"Final eval accuracy {results['eval']['accuracy']:.4f} ({results['eval_weights']} "
        f"weights); results in {workdir}."
    )
    return results


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
