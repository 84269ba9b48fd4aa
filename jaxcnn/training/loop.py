"""``train_and_evaluate(config, workdir)``: the training run that the CLI starts.

The story of a run: build its parts from the config (``setup.py``); lock the workdir; resume
from the newest intact checkpoint there, or initialise (fitting any data-dependent
parameters, then taking another run's weights with ``init_from``: ``init_from.py``); train,
dispatching several steps per call up to the next periodic action — logging (which stops a
diverged run), checkpointing (never of non-finite state), evaluation (``evaluation.py``),
profiling (``actions.py``); stop early on a signal; write the final metrics to
``workdir/results.json``; and, however it ends, close what it opened.
"""

from __future__ import annotations

import datetime
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import data, hardware
from jaxcnn.kernels import onednn
from jaxcnn.training import init_from
from jaxcnn.training.actions import Every, Profiler
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.evaluation import Evaluator, Metrics, report_eval
from jaxcnn.training.optim import count_trainable
from jaxcnn.training.parallel import to_host
from jaxcnn.training.setup import Setup, build_setup
from jaxcnn.training.state import TrainState
from jaxcnn.training.step import scan_steps
from jaxcnn.training.workdir import WorkdirLock, check_free_space, prepare_workdir
from jaxcnn.training.writers import (
    RESULTS_FILE,
    MetricWriter,
    console,
    record_config,
    source_commit,
    write_json_atomically,
)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train and evaluate as ``config`` says, in ``workdir``; returns the final results."""
    started = time.perf_counter()
    return train(build_setup(config), workdir, started=started)


def train(setup: Setup, workdir: str, *, started: float | None = None) -> dict[str, Any]:
    """Run ``setup`` in ``workdir`` to its last step (resuming from its checkpoints); returns
    the final results, also written to ``workdir/results.json``."""
    started = time.perf_counter() if started is None else started
    profiler = Profiler(setup.config.profile_steps, workdir)
    init_from.check_before_start(setup.config.init_from, workdir)  # before the workdir exists
    prepare_workdir(workdir)
    lock = WorkdirLock(workdir)  # one run per workdir
    checkpointer = writer = None
    try:
        checkpointer = Checkpointer(workdir, keep=setup.config.keep_checkpoints)
        state, start_step = restore_or_initialise(setup, checkpointer)
        if jax.process_index() == 0:
            record_config(setup.config, workdir, start_step)
        _announce(setup)
        writer = MetricWriter(workdir)
        run = _Run(setup, workdir, checkpointer, writer, profiler)
        with _StopRequests() as stop:
            state, evaluations = run.train(state, start_step, stop)
        if not evaluations:  # nothing left to train: report the restored model
            evaluations = run.evaluator(state)
        results = {
            "model": setup.config.model.name,
            "dataset": setup.info.name,
            "num_params": setup.num_params,
            "step": setup.total_steps,
            "train_images_per_sec": run.images_per_sec,
            "train_time_sec": time.perf_counter() - run.train_started,
            "wall_time_sec": time.perf_counter() - started,
            "started_at_step": start_step,
            "hardware": hardware.summary(),
            "commit": source_commit(),
            **report_eval(evaluations.pop("eval")),
        }
        if evaluations:
            results["eval_splits"] = {name.split(":", 1)[1]: m for name, m in evaluations.items()}
        if jax.process_index() == 0:
            write_json_atomically(f"{workdir}/{RESULTS_FILE}", results)
        console(
            f"Final eval accuracy {results['eval']['accuracy']:.4f} ({results['eval_weights']} "
            f"weights); results in {workdir}."
        )
        return results
    finally:  # waits for pending checkpoint saves, also when an error ends the run
        profiler.close()
        for resource in (writer, checkpointer, lock):
            if resource is not None:
                resource.close()


def restore_or_initialise(setup: Setup, checkpointer: Checkpointer) -> tuple[TrainState, int]:
    """(state, its step), in this order of precedence: the newest intact checkpoint's; else a
    fresh one with the weights of ``init_from`` (another run's, for fine-tuning) where they
    fit; else a fresh one whose data-dependent parameters (a model's ``data_init``, e.g. a
    whitening layer) are fitted to training images. Resuming comes first, so a restarted run
    never re-initialises."""
    parallel = setup.parallel
    step, restored = checkpointer.restore_latest(
        parallel.checkpoint_target(setup.abstract_state), report=console
    )
    if step:
        console(f"Resuming from the checkpoint at step {step}.")
        return parallel.from_checkpoint(restored), step
    model, fitted = setup.model, None
    if hasattr(model, "data_init"):
        images = data.first_train_images(setup.dataset, model.data_init_examples)
        fitted = model.data_init(images)
        console(f"Initialised {', '.join(fitted)} from {len(images)} training images.")
    state = parallel.init(setup.init_fn(fitted))
    if setup.config.init_from:  # what it provides replaces the fresh (and fitted) values
        state = init_from.initialise(state, setup.config, parallel)
    return state, 0


def _announce(setup: Setup) -> None:
    """One line: what trains, on what, how; and why oneDNN is not used where it could be."""
    config = setup.config
    conv_impl = setup.model.layers.conv_impl
    if config.conv_impl == "auto" and conv_impl == "taps" and (reason := onednn.load()):
        conv_impl += f" (oneDNN is unavailable: {reason})"
    trained = ""
    if config.trainable:
        count = count_trainable(setup.abstract_state.params, config.trainable)
        trained = f", {count:,} of them trained"
    console(
        f"{config.model.name} ({setup.num_params:,} parameters{trained}) on {setup.info.name}: "
        f"{setup.total_steps} steps of batch {config.batch_size} on {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s) in {jax.process_count()} process(es), "
        f"{config.parallelism} parallelism, {conv_impl} convolutions, up to "
        f"{setup.steps_per_dispatch} step(s) per dispatch."
    )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


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


class _Run:
    """The training steps of one start of a run and their periodic actions."""

    def __init__(
        self,
        setup: Setup,
        workdir: str,
        checkpointer: Checkpointer,
        writer: MetricWriter,
        profiler: Profiler,
    ) -> None:
        self.setup, self.workdir = setup, workdir
        self.checkpointer, self.writer, self.profiler = checkpointer, writer, profiler
        config = setup.config
        self.log = Every(config.log_every_steps)
        self.eval = Every(setup.every_steps("eval"))
        self.checkpoint = Every(setup.every_steps("checkpoint"))
        self.evaluator = Evaluator(setup)
        # Both compile on first use; single steps run only up to a step that has an action due,
        # when fewer than steps_per_dispatch steps are left before it.
        step_fn = setup.train_step()
        self.train_step = setup.parallel.compile_train(step_fn)
        self.train_steps = setup.parallel.compile_train(scan_steps(step_fn))
        self.images_per_sec = float("nan")
        self.train_started = time.perf_counter()
        self._pending: list[dict[str, jax.Array]] = []
        self._window_start, self._window_steps = self.train_started, 0

    def train(
        self, state: TrainState, step: int, stop: _StopRequests
    ) -> tuple[TrainState, dict[str, Metrics]]:
        """Train from ``step`` to the end; returns the final state and the last evaluation."""
        setup = self.setup
        batches = data.train_batches(
            setup.dataset,
            batch_size=setup.config.batch_size,
            seed=setup.config.seed,
            start_step=step,
            shard_batch=setup.parallel.shard_batch,
        )
        evaluations: dict[str, Metrics] = {}
        while step < setup.total_steps:
            first = step + 1
            state, step = self._dispatch(state, step, batches)
            is_last = step == setup.total_steps
            # Every step number goes to the preemption check, so that all processes see the
            # step they agreed to stop at.
            preempted = [self.checkpointer.reached_preemption(s) for s in range(first, step + 1)]
            stopping = stop.signum is not None or any(preempted)
            do_eval = is_last or self.eval.due(step)
            do_checkpoint = is_last or stopping or self.checkpoint.due(step)
            if do_eval or do_checkpoint or self.log.due(step) or self._log_time_is_up():
                self._log(step)  # raises Diverged before anything non-finite is saved
                # Save before evaluating: a failed evaluation must not lose the trained steps.
                if do_checkpoint:
                    self._save(state, step, wait=is_last)
                if do_eval:
                    evaluations = self._evaluate(state, step)
                # Throughput windows exclude evaluation and checkpointing.
                self._window_start, self._window_steps = time.perf_counter(), 0
            if stopping:
                raise Interrupted(step, stop.signum or signal.SIGTERM)
        return state, evaluations

    def _dispatch(
        self, state: TrainState, step: int, batches: Iterator[data.Batch]
    ) -> tuple[TrainState, int]:
        """Run one call of several steps (or one, just before an action is due)."""
        per_dispatch = self.setup.steps_per_dispatch
        due = [self.setup.total_steps, self.profiler.next_after(step)]
        due += [action.next_after(step) for action in (self.log, self.eval, self.checkpoint)]
        n = per_dispatch if min(s for s in due if s) - step >= per_dispatch else 1
        self.profiler.before(step)
        with self.profiler.annotate(step):
            if n > 1:
                stacked = self.setup.parallel.stack_batches([next(batches) for _ in range(n)])
                state, metrics = self.train_steps(state, stacked)
            else:
                state, metrics = self.train_step(state, next(batches))
        self.profiler.after(step + n, state)
        self._pending.append(metrics)
        self._window_steps += n
        return state, step + n

    def _log_time_is_up(self) -> bool:
        return time.perf_counter() - self._window_start >= self.setup.config.log_every_secs

    def _log(self, step: int) -> None:
        """Write the mean training metrics since the last report; stop a diverged run."""
        config, total = self.setup.config, self.setup.total_steps
        host = self.setup.parallel.metrics_to_host(self._pending)
        self._pending.clear()
        elapsed = time.perf_counter() - self._window_start  # after the fetch waited for steps
        means = {k: float(np.mean(np.concatenate([np.ravel(m[k]) for m in host]))) for k in host[0]}
        self.images_per_sec = self._window_steps * config.batch_size / elapsed
        means["images_per_sec"] = self.images_per_sec
        self.writer.write(step, "train", means)
        if not math.isfinite(means["loss"]):
            raise Diverged(step, means["loss"], self.checkpointer.latest_step())
        eta = (total - step) * elapsed / self._window_steps
        console(
            f"step {step}/{total} | loss {means['loss']:.4f} | accuracy {means['accuracy']:.4f} "
            f"| lr {means['learning_rate']:.4g} | {self.images_per_sec:,.0f} img/s | "
            f"ETA {_format_duration(eta)}"
        )

    def _save(self, state: TrainState, step: int, wait: bool) -> None:
        """Checkpoint ``state`` unless a parameter is non-finite; ``wait`` until it is on disk
        (before the final evaluation, which may fail)."""
        if not to_host(_all_finite(state.params)):
            return
        check_free_space(self.workdir, self.setup.state_bytes)
        self.checkpointer.save(step, self.setup.parallel.for_checkpoint(state))
        if wait:
            self.checkpointer.wait()

    def _evaluate(self, state: TrainState, step: int) -> dict[str, Metrics]:
        evaluations = self.evaluator(state)
        for name, metrics in evaluations.items():
            self.writer.write(step, name, metrics)
            ema_text = ""
            if "ema_loss" in metrics:
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
