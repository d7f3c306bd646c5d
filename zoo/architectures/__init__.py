"""Architecture families; importing this package registers every model.

Adding a family is one file here plus its import line below.
"""

from zoo.architectures import alexnet, inception, lenet, resnet, vgg  # noqa: F401
