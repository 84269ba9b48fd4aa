"""ResNet-50 on ImageNet-1k (He, Zhang, Ren & Sun, 2016, "Deep Residual Learning for Image
Recognition", §3.4), in the torchvision "v1.5" form (stride on the 3×3 convolution).

    python -m jaxcnn.train --config experiments/resnet50_imagenet.py --workdir /tmp/resnet50

Expect about 76.1% top-1 single-crop (torchvision's reference 76.13%; Goyal et al., 2017,
"Accurate, Large Minibatch SGD", 76.3% with this recipe). ``imagenet2012`` must be prepared for
TFDS by hand.

Hyper-parameters: SGD with momentum 0.9, learning rate 0.1 for batch 256 (scale it linearly
with the batch, with a 5-epoch warm-up above 1k, as in Goyal et al.), divided by 10 at epochs
30, 60 and 80 of 90, weight decay 1e-4 (the paper: 60 × 10^4 iterations and a plateau schedule).
Augmentation: the references use random-resized crops to 224 and flips (the paper also colour
augmentation); this config uses random-resized crops and flips
(the imagenet2012 preset's default, `inception_crop`).

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "resnet50"
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.augment = "default"
    config.batch_size = 256
    config.eval_batch_size = 250
    config.num_epochs = 90.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "step"
    config.schedule.step_epochs = (30.0, 60.0, 80.0)
    config.schedule.step_factor = 0.1
    config.log_every_steps = 200
    config.eval_every_epochs = 5.0
    config.checkpoint_every_steps = 5_000
    return config
