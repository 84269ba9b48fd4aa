"""SimpleCNN on MNIST: the classic Keras / PyTorch MNIST example network.

Reproduces the ``mnist`` example of PyTorch (pytorch/examples, ``mnist/main.py``) and Keras'
``mnist_cnn.py``: two 3×3 convolutions (32, 64), max pooling, dense 128, dropout, softmax.

    python -m jaxcnn.train --config experiments/simplecnn_mnist.py --workdir /tmp/simplecnn_mnist

Expect about 99.1–99.2% test accuracy (the references report 99.0–99.25%).

The PyTorch reference trains 14 epochs with Adadelta (lr 1.0, decayed ×0.7 per epoch) at batch
64; the optimizers here are SGD and AdamW, so this uses AdamW with the Keras example's usual
learning rate (1e-3), a cosine decay over the same 14 epochs, and the model's dropout of 0.5 on
the dense layer (the PyTorch example also drops 0.25 after the convolutions, which this model
leaves out). MNIST comes from TFDS (``mnist``); prepare it once online, or set
``--config.dataset.data_dir``.

Measured with jaxcnn: not yet reproduced here.
"""

import ml_collections

from jaxcnn.config import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.name = "simple_cnn"
    config.model.dropout_rate = 0.5
    config.dataset.name = "mnist"
    config.dataset.augment = "none"
    config.batch_size = 64
    config.eval_batch_size = 1000
    config.num_epochs = 14.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.schedule.name = "cosine"
    config.log_every_steps = 100
    config.eval_every_epochs = 1.0
    config.checkpoint_every_epochs = 1.0
    return config
