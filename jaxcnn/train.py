"""Train and evaluate an experiment: ``python -m jaxcnn.train --config FILE --workdir DIR``.

Any config field can be overridden on the command line, e.g.
``--config.optimizer.learning_rate=0.05 --config.model.name=resnet56``. Re-running with the same
workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import sys

from absl import flags
from ml_collections import config_flags

from jaxcnn import cli, distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a Python file with get_config()), optionally FILE:ARG."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = distributed.define_flags()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    distributed.initialize_from_flags_or_env(_DISTRIBUTED())
    from jaxcnn.training.loop import Diverged, Interrupted, train_and_evaluate
    from jaxcnn.training.workdir import DISK_FULL_EXIT_STATUS, disk_full_message

    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Interrupted as stopped:
        print(stopped, file=sys.stderr, flush=True)
        sys.exit(128 + stopped.signum)
    except Diverged as diverged:
        print(f"error: {diverged}", file=sys.stderr, flush=True)
        sys.exit(Diverged.EXIT_STATUS)
    except Exception as error:
        if message := disk_full_message(error, _WORKDIR.value):
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(DISK_FULL_EXIT_STATUS)
        raise


if __name__ == "__main__":
    cli.run(main)
