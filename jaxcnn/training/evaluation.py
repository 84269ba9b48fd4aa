"""Evaluation of a run's weights on every eval split of its config.

An ``Evaluator`` compiles the eval step once and opens each eval split once; every call makes a
full pass over each split. With an EMA it evaluates the trained weights and their average.
"""

from __future__ import annotations

from typing import Any

from jaxcnn import data
from jaxcnn.training.parallel import tree_add
from jaxcnn.training.setup import Setup
from jaxcnn.training.state import TrainState

Metrics = dict[str, float]


class Evaluator:
    """Metrics of a train state on the eval splits of ``setup``, by record name: ``eval`` for
    the first (reported) split, ``eval:SPLIT`` for the others. With ``confusion``,
    :meth:`totals` holds each pass's confusion matrix too (``python -m jaxcnn.evaluate``)."""

    def __init__(self, setup: Setup, confusion: bool = False) -> None:
        self.setup = setup
        self._step = setup.parallel.compile_eval(setup.eval_step(confusion=confusion))
        batch_size, shard = setup.config.eval_batch_size, setup.parallel.shard_batch
        self.splits = {
            "eval" if i == 0 else f"eval:{dataset.eval_split}": data.eval_batches(
                dataset, batch_size=batch_size, shard_batch=shard
            )
            for i, dataset in enumerate(setup.eval_datasets)
        }

    def totals(self, variables: dict[str, Any], batches: data.EvalBatches) -> dict[str, Any]:
        """The eval step's sums over one pass of ``batches`` (summed on the devices), as
        numpy values on the host."""
        totals = None
        for batch in batches:
            sums = self._step(variables, batch)
            totals = sums if totals is None else tree_add(totals, sums)
        return self.setup.parallel.metrics_to_host(totals)

    def evaluate_weights(self, variables: dict[str, Any], batches: data.EvalBatches) -> Metrics:
        """Loss, accuracy (and top-5 accuracy) of ``variables`` over one pass of ``batches``."""
        return metrics_from_totals(self.totals(variables, batches))

    def __call__(self, state: TrainState) -> dict[str, Metrics]:
        """Every split's metrics of the trained weights, and with an EMA the average's as
        ``ema_*``."""
        results = {}
        for name, batches in self.splits.items():
            metrics = self.evaluate_weights(state.variables(), batches)
            if state.ema is not None:
                ema = self.evaluate_weights(state.ema, batches)
                metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "num_examples"})
            results[name] = metrics
        return results


def metrics_from_totals(totals: dict[str, Any]) -> Metrics:
    """Mean loss, accuracy (and top-5 accuracy) and the example count of an eval pass's sums."""
    count = float(totals["count"])
    metrics = {
        "loss": float(totals["loss"]) / count,
        "accuracy": float(totals["correct"]) / count,
        "num_examples": count,
    }
    if "correct_top5" in totals:
        metrics["top5_accuracy"] = float(totals["correct_top5"]) / count
    return metrics


def report_eval(metrics: Metrics) -> dict[str, Any]:
    """The results.json entries of final eval ``metrics``: ``eval`` holds those of the weights
    reported (the EMA's when there is one), ``eval_weights`` says which (``raw`` or ``ema``),
    and with EMA ``eval_raw`` holds the trained weights' own."""
    raw = {k: v for k, v in metrics.items() if not k.startswith("ema_")}
    if "ema_accuracy" not in metrics:
        return {"eval": raw, "eval_weights": "raw"}
    ema = {k[len("ema_") :]: v for k, v in metrics.items() if k.startswith("ema_")}
    ema["num_examples"] = raw["num_examples"]
    return {"eval": ema, "eval_weights": "ema", "eval_raw": raw}
