"""AlexNet on ImageNet-1k (Krizhevsky, Sutskever & Hinton, 2012, "ImageNet Classification with
Deep Convolutional Neural Networks"), with torchvision's single-GPU variant and recipe.

    python -m jaxcnn.train --config experiments/alexnet_imagenet.py --workdir /tmp/alexnet

Expect about 56.5% top-1 (torchvision's reference 56.52%; the paper's single model, with its
local response normalisation, overlapping pooling and 10-crop testing, 59.3%).
``imagenet2012`` must be prepared for TFDS from the manually downloaded archives.

Hyper-parameters (torchvision's reference recipe, close to the paper's): SGD with momentum 0.9,
learning rate 0.01 divided by 10 every 30 epochs, 90 epochs, batch 256, weight decay 1e-4
(the paper: 5e-4, batch 128), dropout 0.5 in the classifier. Augmentation: the reference uses
random-resized crops to 224 and horizontal flips; so does this config (the
imagenet2012 preset's default, `inception_crop`).

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "alexnet"
    config.model.dropout_rate = 0.5
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.augment = "default"
    config.batch_size = 256
    config.eval_batch_size = 250
    config.num_epochs = 90.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.step_epochs = (30.0, 60.0)
    config.schedule.step_factor = 0.1
    config.log_every_steps = 200
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 5_000
    return config
