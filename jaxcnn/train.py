"""Train and evaluate an experiment: ``python -m jaxcnn.train --config FILE --workdir DIR``.

Any config field can be overridden on the command line, e.g.
``--config.optimizer.learning_rate=0.05 --config.model.name=resnet56``. Re-running with the same
workdir resumes from its latest checkpoint. Compiled steps are cached across runs in
``$JAXCNN_CACHE_DIR`` (default ``~/.cache/jaxcnn/xla``; set it empty to turn caching off).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from jaxcnn import cli, xla_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a Python file with get_config()), optionally FILE:ARG."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    xla_flags.apply_default_flags()
    xla_flags.enable_compilation_cache()
    from jaxcnn.training.loop import train_and_evaluate

    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
