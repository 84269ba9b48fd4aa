"""Classify image files with a trained run: ``python -m jaxcnn.predict --workdir DIR IMAGE...``.

Each IMAGE is a JPEG, PNG, BMP or GIF file of any size and channel count, or a folder searched
(recursively) for such files. They are preprocessed exactly as the run's evaluation
preprocessed its test images (resize or resize and center-crop, channels, normalisation, from
the run's recorded config) and classified with the weights the run reports (its moving
average where it kept one) from its newest checkpoint, or ``--step N``:

    python -m jaxcnn.predict --workdir /tmp/quickstart --top_k 3 digit.png photos/

It prints the ``--top_k`` classes of each image with their names and probabilities, as a table
or, with ``--json``, one JSON line per image. A file that cannot be decoded gets one line on
stderr and the others are still classified; the exit status is then 1. Overrides of the
recorded config (``--config.eval_tta=flip``) work as in ``jaxcnn.evaluate``.
"""

from __future__ import annotations

import sys

from absl import flags

from jaxcnn import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to use; default: the newest.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to list per image.", lower_bound=1)
_JSON = flags.DEFINE_boolean("json", False, "One JSON line per image instead of a table.")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str], overrides: list[str]) -> None:
    from jaxcnn.prediction import Failure, Predictor, find_images, format_table
    from jaxcnn.training.trained import load_trained

    paths = find_images(argv[1:])  # bad arguments fail before the model is loaded
    trained = load_trained(
        _WORKDIR.value, _STEP.value, change=lambda config: cli.apply_overrides(config, overrides)
    )
    predictions, failed = [], 0
    for result in Predictor(trained).predict(paths, _TOP_K.value):
        if isinstance(result, Failure):
            failed += 1
            print(f"error: {result.path}: {result.reason}", file=sys.stderr, flush=True)
        elif _JSON.value:
            print(result.as_json(), flush=True)
        else:
            predictions.append(result)
    if predictions:
        print(format_table(predictions))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main, config_overrides=True)
