"""Evaluate a trained run's checkpoint: ``python -m jaxcnn.evaluate --workdir DIR``.

Restores the newest checkpoint in DIR (or ``--step N``) into the model the run's recorded
config describes, and evaluates it on the split the run reports (the first of
``dataset.eval_split``), or on another split or dataset given as overrides of that config in
``jaxcnn.train``'s syntax:

    python -m jaxcnn.evaluate --workdir /tmp/quickstart
    python -m jaxcnn.evaluate --workdir /tmp/quickstart --config.dataset.eval_split=train

It prints loss, top-1 and top-5 accuracy — of the moving average of the weights where the run
kept one, with the trained weights' top-1 beside — per-class accuracy and the confusion matrix,
and writes them to DIR/evaluation/step_N (``_SPLIT`` appended for another split, the
dataset's name too for another dataset) or ``--output``: ``evaluation.json``,
``confusion_matrix.json`` and ``confusion_matrix.png``. Nothing already written is changed:
an output folder that is not empty is refused.
"""

from __future__ import annotations

from absl import flags

from jaxcnn import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the newest.")
_OUTPUT = flags.DEFINE_string(
    "output", "", "Folder for the results; '' = WORKDIR/evaluation/step_N[_DATASET][_SPLIT]."
)
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str], overrides: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from jaxcnn import assess
    from jaxcnn.training.trained import load_trained, recorded_config

    workdir = _WORKDIR.value
    recorded = recorded_config(workdir)

    def change(config):
        cli.apply_overrides(config, overrides)
        assess.one_split(config, overrides)

    trained = load_trained(workdir, _STEP.value, change=change)
    output = _OUTPUT.value or assess.default_output(trained, recorded)
    assess.check_output(output)  # before the evaluation, not after it
    record = assess.evaluate(trained, overrides)
    paths = assess.write(record, output)
    print(assess.format_record(record))
    print(f"Wrote {', '.join(paths)}.")


if __name__ == "__main__":
    cli.run(main, config_overrides=True)
