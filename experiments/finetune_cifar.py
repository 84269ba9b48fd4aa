"""Fine-tuning: a ResNet-20 trained on CIFAR-10 carried over to the UCI handwritten digits,
offline (``init_from``), beside the same recipe from scratch.

First a source run on CIFAR-10 (here the JPEG copy beside this checkout; 16,000 steps of the
paper's recipe, before its first learning-rate decay, about 82% CIFAR-10 test accuracy), then
the fine-tuning run that starts from its newest checkpoint, and the baseline without a source:

    TFDS_DATA_DIR=../shared/datasets python -m jaxcnn.train --config experiments/resnet_cifar.py \
      --config.dataset.name=cifar10_jpeg --config.num_train_steps=16000 --workdir /tmp/resnet20
    python -m jaxcnn.train --config experiments/finetune_cifar.py:/tmp/resnet20 \
      --workdir /tmp/finetune_digits
    python -m jaxcnn.train --config experiments/finetune_cifar.py --workdir /tmp/scratch_digits

The argument after the colon is the source (``init_from``: a workdir, ``WORKDIR:STEP`` or a
variables file); without one the same recipe trains from a random initialisation. The digits
(8×8 grey) are resized to 32×32 and repeated over three channels for the CIFAR network. Both
have 10 classes, so every parameter fits, but CIFAR's classes are not the digits':
``init_fresh='head'`` starts the classifier afresh. Only 10% of the digits' training split
(144 images) is used, where what the source learned matters most. The whole network trains
with the from-scratch recipe; ``--config.trainable=head`` trains the new head alone on the
frozen CIFAR features (a linear probe), and ``optimizer.lr_multipliers`` (e.g.
``'head=1,.*=0.1'``) slows the transferred layers.

Measured with jaxcnn: fine-tuned 94.35% digits test accuracy (mean of seeds 0-2: 95.00%,
93.61%, 94.44%) against 92.96% from scratch (91.94%, 93.06%, 93.89%); the linear probe (seed
0) 65.00%. Each run is 120 steps, about 25 s of training on a 2-core CPU. The source was the
checkpoint at step 16,000 of the CIFAR-10 ResNet-20 reproduction run (82.30% CIFAR-10 test
accuracy): the recipe and step of the first command above.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config(source: str = "") -> ml_collections.ConfigDict:
    """The fine-tuning recipe from ``source`` (``experiments/finetune_cifar.py:SOURCE``), or
    from scratch without one."""
    config = base_config()
    config.model.name = "resnet20"
    config.dataset.name = "digits"
    config.dataset.image_size = 32
    config.dataset.channels = 3
    config.dataset.train_split = "train[:10%]"
    config.init_from = source
    config.init_fresh = "head" if source else ""
    config.batch_size = 32
    config.eval_batch_size = 120
    config.num_epochs = 30.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500
    return config
