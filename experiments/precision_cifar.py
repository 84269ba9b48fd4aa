"""Is bfloat16 accuracy-neutral? ResNet-20 on CIFAR-10 for the first 600 steps of the paper's
recipe (``experiments/resnet_cifar.py``), once in float32 and once in bfloat16, with the same
seed: the same initial weights and the same batches, so the two loss curves differ only by
the computation's precision.

    python -m jaxcnn.sweep --config experiments/precision_cifar.py --workdir /tmp/precision
    python -m jaxcnn.report /tmp/precision

Offline, add ``--config.dataset.name=cifar10_jpeg`` and set ``TFDS_DATA_DIR``. In bfloat16 the
convolutions and matmuls compute in bfloat16 (oneDNN's on a CPU with bfloat16 instructions);
weights, optimizer state, BatchNorm statistics and the loss stay float32.

Measured with jaxcnn: see BENCHMARKS.md, section "bfloat16 on the CPU".
"""

import os
import runpy

import ml_collections

from jaxcnn import sweep_grid

_RESNET_CIFAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resnet_cifar.py")


def get_config() -> ml_collections.ConfigDict:
    config = runpy.run_path(_RESNET_CIFAR)["get_config"]()  # ResNet-20, the paper's recipe
    config.num_train_steps = 600
    config.log_every_steps = 25
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    return config


def get_sweep() -> list[dict]:
    return sweep_grid.axis("model.dtype", ["float32", "bfloat16"])
