"""Write the device pipeline's array cache: ``python -m jaxcnn.data.export --config FILE``.

Run it where TensorFlow is installed (it reads the dataset with tfds); it prints the path of the
``.npz`` file, which a machine without TensorFlow then finds under the same
``dataset.array_dir`` (see :mod:`jaxcnn.data.device_resident`). Config overrides work as in
training.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from jaxcnn import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (a Python file with get_config()), optionally FILE:ARG."
)
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from jaxcnn.data.device_resident import array_path
    from jaxcnn.data.streaming import export_arrays

    path = array_path(_CONFIG.value.dataset)
    export_arrays(_CONFIG.value.dataset, path)
    print(path)


if __name__ == "__main__":
    cli.run(main)
