"""VGG-16 with BatchNorm on CIFAR-10, the recipe of the widely used kuangliu/pytorch-cifar.

The network is VGG-16 (Simonyan & Zisserman, 2015) with BatchNorm after every convolution and
the small-image classifier (``small_images=True``: the 1×1×512 map → dense 512 → dense 10).

    python -m jaxcnn.train --config experiments/vgg_cifar.py --workdir /tmp/vgg16_cifar

Expect about 93.5% test accuracy (pytorch-cifar reports 92.64% for VGG16 with an older recipe;
VGG-16-BN with this one typically reaches 93–94%).
Offline: ``--config.dataset.name=cifar10_jpeg`` with ``TFDS_DATA_DIR`` set (see resnet_cifar.py).

Hyper-parameters (pytorch-cifar): SGD with momentum 0.9, learning rate 0.1 with cosine decay
over 200 epochs, batch 128, weight decay 5e-4, padding-4 random crops and horizontal flips.

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "vgg16_bn"
    config.model.small_images = True
    config.dataset.name = "cifar10"
    config.dataset.augment = "crop_flip"
    config.batch_size = 128
    config.num_epochs = 200.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.log_every_steps = 100
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 10.0
    return config
