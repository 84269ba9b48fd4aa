"""EfficientNet-B0 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks") trained from scratch on CIFAR-10.

    python -m jaxcnn.train --config experiments/efficientnet_cifar.py --workdir /tmp/effnet_cifar

The paper's CIFAR-10 results (98.1% for B7, 98.0% for B0-scale transfer) fine-tune ImageNet
weights at 224×224; this framework trains from scratch and loads no weights. B0 divides its
input by 32, so CIFAR images are resized to 64×64 (2×2 maps at the end). Expect roughly 90%
(not yet measured); treat this as a baseline for compact-model ablations, not a reproduction.
Offline: ``--config.dataset.name=cifar10_jpeg`` with ``TFDS_DATA_DIR`` set (see resnet_cifar.py).

Hyper-parameters: the paper's model regularisers (dropout 0.2, stochastic depth 0.2) with the
CIFAR recipe of the other configs here instead of the paper's ImageNet RMSProp recipe: SGD with
Nesterov momentum 0.9, learning rate 0.1, cosine decay over 200 epochs after a 5-epoch warm-up,
batch 128, weight decay 5e-4, random crops (padding 8 at 64×64) and horizontal flips.

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "efficientnet_b0"
    config.model.dropout_rate = 0.2
    config.model.stochastic_depth_rate = 0.2
    config.dataset.name = "cifar10"
    config.dataset.image_size = 64
    config.dataset.augment = "crop_flip"
    config.dataset.crop_padding = 8
    config.batch_size = 128
    config.num_epochs = 200.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 5.0
    config.log_every_steps = 100
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 10.0
    return config
