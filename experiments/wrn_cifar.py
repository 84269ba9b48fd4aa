"""Wide ResNet WRN-28-10 on CIFAR-10 (Zagoruyko & Komodakis, 2016, "Wide Residual Networks").

    python -m jaxcnn.train --config experiments/wrn_cifar.py --workdir /tmp/wrn28_10
    python -m jaxcnn.sweep --config experiments/wrn_cifar.py --workdir /tmp/wrn_dropout

Expected test accuracy: 96.11% with dropout 0.3 (the paper's 3.89% error), 96.00% without.
Offline: ``--config.dataset.name=cifar10_jpeg`` with ``TFDS_DATA_DIR`` set (see resnet_cifar.py).

Hyper-parameters, as in the paper: SGD with Nesterov momentum 0.9, learning rate 0.1 multiplied
by 0.2 at epochs 60, 120 and 160, 200 epochs, batch 128, weight decay 5e-4, dropout 0.3 between
the convolutions of each block, padding-4 random crops and horizontal flips, per-channel
normalisation. The sweep is the paper's dropout ablation (0 vs 0.3).

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn import sweep_grid
from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "wrn28_10"
    config.model.dropout_rate = 0.3
    config.dataset.name = "cifar10"
    config.dataset.augment = "crop_flip"
    config.batch_size = 128
    config.num_epochs = 200.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "step"
    config.schedule.step_epochs = (60.0, 120.0, 160.0)
    config.schedule.step_factor = 0.2
    config.log_every_steps = 100
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 10.0
    return config


def get_sweep() -> list[dict]:
    """Dropout between the convolutions of each block, off and on (the paper's Table 6)."""
    return sweep_grid.axis("model.dropout_rate", [0.0, 0.3])
