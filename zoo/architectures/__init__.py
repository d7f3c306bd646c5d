"""Architecture families; importing this package registers every model.

Adding a family is one file here plus its import line below.
"""

import importlib

from zoo.architectures import alexnet, inception, lenet, resnet, vgg  # noqa: F401

# Last, once every family is registered: the pretrained-weights catalog attaches its
# entries to the specs (Spec.weights).
importlib.import_module("zoo.weights")
