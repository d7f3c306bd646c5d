"""tf.data input pipelines: image folders and TFDS, decoding, cropping and augmentation.

Example:
    >>> import pipelines
    >>> data = pipelines.from_folder("photos/", model="resnet50", out_dir="runs/1")
    >>> data.train, data.val, data.class_names, data.skipped, data.counts
    >>> tags = pipelines.from_csv("train.csv", "images/", label_delimiter=" ")

Pixels leave every pipeline as float32 RGB in [0, 255], channels last; normalisation is the
model's first layer. The modules, by stage: ``scan`` (walk folders), ``probe`` (check
files), ``split`` (split and manifest), ``cache`` (content-keyed caches), ``dataset`` (the
``tf.data`` graph), ``sampling`` (balanced train streams), ``transforms`` and ``augment``
(per image and batch), ``options`` (the entry points' shared options); the entry points are
``folder``, ``table`` (CSV files and DataFrames) and ``tfds``.
"""

from pipelines.augment import PRESETS, Plan
from pipelines.dataset import EvalFiles
from pipelines.folder import from_files, from_folder
from pipelines.imagedata import ImageData, balanced_class_weights
from pipelines.probe import BadImage, probe
from pipelines.scan import IMAGE_EXTENSIONS, class_folders, list_images
from pipelines.split import iterative_split, read_manifest, stratified_split
from pipelines.store import from_store, prepare
from pipelines.table import from_csv, from_dataframe
from pipelines.tfds import from_tfds
from pipelines.transforms import jpeg_orientation, make_eval_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "BadImage",
    "EvalFiles",
    "ImageData",
    "Plan",
    "balanced_class_weights",
    "class_folders",
    "from_csv",
    "from_dataframe",
    "from_files",
    "from_folder",
    "from_store",
    "from_tfds",
    "iterative_split",
    "jpeg_orientation",
    "list_images",
    "make_eval_transform",
    "prepare",
    "probe",
    "read_manifest",
    "stratified_split",
]
