"""tf.data input pipelines: image folders and TFDS, decoding, cropping and augmentation."""
