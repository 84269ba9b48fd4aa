"""ViT-B/16 trained from scratch on ImageNet-1k (Dosovitskiy et al., 2021, "An Image is Worth
16x16 Words: Transformers for Image Recognition at Scale", appendix B.1).

    python -m jaxcnn.train --config experiments/vit_b16_imagenet.py --workdir /tmp/vit_b16

The paper reports 77.9% top-1 for ViT-B/16 trained on ImageNet-1k alone at 224×224 (higher
numbers need ImageNet-21k pre-training or DeiT's strong augmentation). ``imagenet2012`` must be
prepared for TFDS by hand.

Hyper-parameters (the paper's): Adam(W) with β 0.9/0.999, batch 4096, learning rate 3e-3 with
a 10k-step linear warm-up and cosine decay (here: warm-up of 32 epochs ≈ 10k steps at batch
4096), 300 epochs, weight decay 0.3, global-norm gradient clipping at 1.0, dropout 0.1.
Augmentation: the paper uses Inception-style random crops and flips; so does this config (the
imagenet2012 preset's default, `inception_crop`).

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "vit_b16"
    config.model.dropout_rate = 0.1
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.augment = "default"
    config.batch_size = 4096
    config.eval_batch_size = 1000
    config.num_epochs = 300.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 0.3
    config.optimizer.grad_clip_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 32.0
    config.log_every_steps = 100
    config.eval_every_epochs = 10.0
    config.checkpoint_every_steps = 1_000
    return config
