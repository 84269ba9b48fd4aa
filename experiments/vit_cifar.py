"""A small Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words")
trained from scratch on CIFAR-10: ViT-S with 4×4 patches on 32×32 images (64 tokens).

    python -m jaxcnn.train --config experiments/vit_cifar.py --workdir /tmp/vit_cifar

ViTs need strong augmentation and long training on small datasets; this config uses the
DeiT-style set (RandAugment 2/9, Mixup 0.8, CutMix 1.0, random erasing 0.25) with which recipes
such as Lee et al., 2021 ("Vision Transformer for Small-Size Datasets") reach about 93% (not yet
measured with jaxcnn).
Offline: ``--config.dataset.name=cifar10_jpeg`` with ``TFDS_DATA_DIR`` set (see resnet_cifar.py).

Hyper-parameters (the small-dataset ViT recipe of Lee et al.): AdamW (β 0.9/0.999), learning
rate 1e-3 with a 10-epoch linear warm-up and cosine decay over 200 epochs, batch 128, weight
decay 0.05, label smoothing 0.1, global-norm gradient clipping at 1.0.

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "vit_s16"
    config.model.image_size = 32
    config.model.patch_size = 4
    config.dataset.name = "cifar10"
    config.dataset.augment = "crop_flip"
    config.dataset.randaugment_layers = 2
    config.dataset.randaugment_magnitude = 9.0
    config.dataset.mixup_alpha = 0.8
    config.dataset.cutmix_alpha = 1.0
    config.dataset.erase_prob = 0.25
    config.batch_size = 128
    config.num_epochs = 200.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.grad_clip_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 10.0
    config.label_smoothing = 0.1
    config.log_every_steps = 100
    config.eval_every_epochs = 10.0
    config.checkpoint_every_epochs = 10.0
    return config
