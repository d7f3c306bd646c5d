"""tf.data input pipelines: image folders and TFDS, decoding, cropping and augmentation.

Example:
    >>> import pipelines
    >>> data = pipelines.from_folder("photos/", model="resnet50", out_dir="runs/1")
    >>> data.train, data.val, data.class_names, data.skipped, data.counts

Pixels leave every pipeline as float32 RGB in [0, 255], channels last; normalisation is the
model's first layer.
"""

from pipelines.augment import PRESETS, Plan
from pipelines.folder import (
    BadImage,
    EvalFiles,
    ImageData,
    balanced_class_weights,
    from_files,
    from_folder,
    probe,
    read_manifest,
    stratified_split,
)
from pipelines.tfds import from_tfds
from pipelines.transforms import jpeg_orientation, make_eval_transform

__all__ = [
    "PRESETS",
    "BadImage",
    "EvalFiles",
    "ImageData",
    "Plan",
    "balanced_class_weights",
    "from_files",
    "from_folder",
    "from_tfds",
    "jpeg_orientation",
    "make_eval_transform",
    "probe",
    "read_manifest",
    "stratified_split",
]
