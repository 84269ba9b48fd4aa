"""The model zoo: Flax Linen modules found by name.

>>> from jaxcnn import models
>>> model = models.create('resnet20', num_classes=10)
>>> models.list_models()
"""

# Importing a family module registers its models.
from jaxcnn.models import (  # noqa: F401
    airbench,
    alexnet,
    convnext,
    efficientnet,
    googlenet,
    lenet,
    mobilenet,
    resnet,
    simple_cnn,
    vgg,
    vit,
)
from jaxcnn.models.registry import ModelEntry, create, get_entry, list_models, register

__all__ = ["ModelEntry", "create", "get_entry", "list_models", "register"]
