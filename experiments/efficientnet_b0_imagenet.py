"""EfficientNet-B0 on ImageNet-1k (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks").

    python -m jaxcnn.train --config experiments/efficientnet_b0_imagenet.py --workdir /tmp/effb0

The paper reports 77.1% top-1 (later 77.7% with its AutoAugment recipe); not yet reproduced
here. ``imagenet2012`` must be prepared for TFDS by hand.

The paper's recipe (and its TensorFlow reference code), followed here: RMSProp with decay 0.9,
momentum 0.9 and epsilon 1e-3 in TensorFlow's convention; learning rate 0.016 per 256 images
(0.032 at batch 512) after a 5-epoch warm-up, multiplied by 0.97 every 2.4 epochs; 350 epochs;
weight decay 1e-5; label smoothing 0.1; an exponential moving average of the weights with decay
0.9999 (TensorFlow's warm-up, min(d, (1 + n) / (10 + n))), which is what the paper evaluates;
BatchNorm ε 1e-3, momentum 0.99 (the model's defaults); dropout 0.2, stochastic depth 0.2.
Differences: batch 512 instead of 4096 (learning rate scaled linearly); RandAugment(2, 9) in
place of AutoAugment; random-resized crops and flips as the preset's augmentation.

Measured with jaxcnn: not yet reproduced here.
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
    config.optimizer.name = "rmsprop"
    config.optimizer.learning_rate = 0.016 * 512 / 256
    config.optimizer.momentum = 0.9
    config.optimizer.rms_decay = 0.9
    config.optimizer.eps = 1e-3
    config.optimizer.weight_decay = 1e-5
    config.schedule.name = "exponential"
    config.schedule.warmup_epochs = 5.0
    config.schedule.decay_factor = 0.97
    config.schedule.decay_every_epochs = 2.4
    config.label_smoothing = 0.1
    config.ema.decay = 0.9999
    config.ema.warmup = "count"
    config.log_every_steps = 200
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 1.0
    return config
