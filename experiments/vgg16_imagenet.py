"""VGG-16 on ImageNet-1k (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"), configuration D.

    python -m jaxcnn.train --config experiments/vgg16_imagenet.py --workdir /tmp/vgg16

Expect about 71.6% top-1 single-crop (torchvision's reference 71.59%; the paper's 73.0% uses
dense multi-scale testing). ``imagenet2012`` must be prepared for TFDS by hand.

Hyper-parameters (the paper's): SGD with momentum 0.9, batch 256, weight decay 5e-4, dropout 0.5
in the first two dense layers, learning rate 0.01 divided by 10 three times over 74 epochs
(when the validation accuracy stalled; here at epochs 30, 50 and 65). The paper initialised the
deeper nets from a trained shallower one; like torchvision this starts from scratch with
Kaiming initialisation, which works without it. Augmentation: the paper crops 224×224 from
images rescaled to a random size in [256, 512] and flips them; this config uses the
closest standard one, random-resized crops to 224 and flips (the preset's default).

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "vgg16"
    config.model.dropout_rate = 0.5
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.augment = "default"
    config.batch_size = 256
    config.eval_batch_size = 250
    config.num_epochs = 74.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "step"
    config.schedule.step_epochs = (30.0, 50.0, 65.0)
    config.schedule.step_factor = 0.1
    config.log_every_steps = 200
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 5_000
    return config
