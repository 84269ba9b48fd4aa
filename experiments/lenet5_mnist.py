"""LeNet-5 on MNIST (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-Based Learning Applied
to Document Recognition", §III).

    python -m jaxcnn.train --config experiments/lenet5_mnist.py --workdir /tmp/lenet5_mnist

The paper reports 0.95% test error (99.05% accuracy) without distortions, 0.8% with them; expect
about 99.0–99.1%.

Reference setup: 28×28 digits padded to 32×32 (here: resized to 32×32), tanh units, 20 passes
over the 60,000 training images with per-parameter learning rates from the stochastic diagonal
Levenberg-Marquardt method (global rate 5e-4 → 1e-5 in steps). That optimizer is not offered
here; plain SGD with momentum 0.9, learning rate 0.05 and a cosine decay over 20 epochs reaches
the same accuracy. The paper's RBF output layer and sparse C3 connection table are replaced by
a dense layer and full connections, as in all modern re-implementations. The sweep compares
tanh with ReLU.

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn import sweep_grid
from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "lenet5"
    config.model.activation = "tanh"
    config.dataset.name = "mnist"
    config.dataset.image_size = 32
    config.dataset.augment = "none"
    config.batch_size = 64
    config.eval_batch_size = 1000
    config.num_epochs = 20.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.schedule.name = "cosine"
    config.log_every_steps = 100
    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    return config


def get_sweep() -> list[dict]:
    """The paper's tanh against ReLU."""
    return sweep_grid.axis("model.activation", ["tanh", "relu"])
