"""EfficientNet-B0 on ImageNet-1k (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks").

    python -m jaxcnn.train --config experiments/efficientnet_b0_imagenet.py --workdir /tmp/effb0

The paper reports 77.1% top-1 (later 77.7% with its AutoAugment recipe). Expect about 75–76%
here (not yet measured) because of the differences below. ``imagenet2012`` must be prepared for
TFDS by hand.

The paper's recipe: RMSProp (decay 0.9, momentum 0.9), batch 4096, learning rate 0.256 decayed
by 0.97 every 2.4 epochs, 350 epochs, weight decay 1e-5, BatchNorm momentum 0.99, dropout 0.2,
stochastic depth 0.2, AutoAugment. RMSProp is not among the optimizers here, so this uses the
common substitute (as in torchvision's and timm's SGD recipes): SGD with Nesterov momentum 0.9,
learning rate 0.1 × batch/256 (0.2 at batch 512), 5-epoch warm-up, cosine decay over 350 epochs,
weight decay 1e-5, label smoothing 0.1. Augmentation: random-resized crops and flips (the
preset's default) plus RandAugment(2, 9) in place of the paper's AutoAugment.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "efficientnet_b0"
    config.model.dropout_rate = 0.2
    config.model.stochastic_depth_rate = 0.2
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.augment = "default"
    config.dataset.randaugment_layers = 2
    config.dataset.randaugment_magnitude = 9.0
    config.batch_size = 512
    config.eval_batch_size = 250
    config.num_epochs = 350.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.2
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1e-5
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.log_every_steps = 200
    config.eval_every_steps = 25_000  # about every 10 epochs (2,502 steps per epoch)
    config.checkpoint_every_steps = 2_500
    return config
