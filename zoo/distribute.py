"""Choosing the tf.distribute strategy and the mixed-precision policy for the hardware.

The same training command runs unchanged on one CPU, several GPUs (``MirroredStrategy``),
several hosts (``MultiWorkerMirroredStrategy``, selected by ``TF_CONFIG``) and a TPU.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache

import tensorflow as tf

log = logging.getLogger("zoo")

STRATEGIES = ("auto", "one", "mirrored", "multiworker", "tpu")
POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from error


def _tpu_resolver():
    """Returns a connected TPU cluster resolver, or None when no TPU is attached."""
    if not (os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
            or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")):
        return None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as error:
        log.info("No usable TPU (%s).", error)
        return None


_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def select_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """Returns the distribution strategy for this process (created once, then reused).

    ``MultiWorkerMirroredStrategy`` must exist before TensorFlow runs its first operation;
    a program that builds its datasets before calling :func:`zoo.finetune` calls this
    first, and ``finetune`` then reuses the same strategy.

    ``"auto"`` picks, in order: a TPU when one is attached; ``MultiWorkerMirroredStrategy``
    when ``TF_CONFIG`` names a cluster of more than one task; ``MirroredStrategy`` when
    there are several GPUs (or several logical CPU devices set up by the caller); the
    default one-device strategy otherwise.

    Args:
        kind: ``"auto"``, ``"one"``, ``"mirrored"``, ``"multiworker"`` or ``"tpu"``.

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        ValueError: For an unknown kind, or a forced kind the machine cannot provide.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"Unknown strategy {kind!r}; expected one of {STRATEGIES}.")
    if kind not in _STRATEGIES:
        _STRATEGIES[kind] = _create_strategy(kind)
    return _STRATEGIES[kind]


def _create_strategy(kind: str) -> tf.distribute.Strategy:
    if kind in ("auto", "tpu"):
        resolver = _tpu_resolver()
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
        if kind == "tpu":
            raise ValueError("strategy='tpu' was asked for but no TPU was found "
                             "(set TPU_NAME, or run on a TPU VM).")
    cluster = _tf_config().get("cluster", {})
    tasks = sum(len(v) for v in cluster.values())
    if kind == "multiworker" or (kind == "auto" and tasks > 1):
        if not cluster:
            raise ValueError("strategy='multiworker' needs TF_CONFIG with a cluster spec; "
                             "see docs/distributed.md.")
        patch_keras_for_multiworker()
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs any "
                "operation: call zoo.distribute.select_strategy() at the start of the "
                "program (before building datasets), or pass finetune a folder path."
            ) from error
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "mirrored" or (kind == "auto" and (len(gpus) > 1 or len(cpus) > 1)):
        devices = [d.name for d in (gpus if gpus else cpus)]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run directory (only one process of a cluster does)."""
    del strategy  # The cluster spec decides, whatever the strategy object.
    task = _tf_config().get("task", {})
    if not task:
        return True
    kind, index = task.get("type"), task.get("index", 0)
    cluster = _tf_config().get("cluster", {})
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


def worker_index() -> int:
    """The index of this process in the cluster (0 when not distributed across hosts)."""
    return int(_tf_config().get("task", {}).get("index", 0))


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_policy() -> str:
    """The mixed-precision policy that pays off on this hardware.

    ``mixed_float16`` on NVIDIA GPUs of compute capability 7.0 or more (tensor cores),
    ``mixed_bfloat16`` on TPUs and on CPUs with AVX512_BF16 or AMX, ``float32`` otherwise.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = details.get("compute_capability", (0, 0))
        return "mixed_float16" if capability >= (7, 0) else "float32"
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    flags = _cpu_flags()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return "mixed_bfloat16"
    return "float32"


def resolve_policy(kind: str = "auto") -> str:
    """Validates a policy name, resolving ``"auto"`` with :func:`auto_policy`."""
    if kind not in POLICIES:
        raise ValueError(f"Unknown precision {kind!r}; expected one of {POLICIES}.")
    return auto_policy() if kind == "auto" else kind


# Keras versions whose TensorFlow trainer fails under MultiWorkerMirroredStrategy in the
# two places patched below; checked on each release that zoo's pyproject admits.
_MWMS_PATCH_RANGE = ((3, 0), (3, 16))
_patched = False


def _keras_version() -> tuple[int, int]:
    import keras

    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


def patch_keras_for_multiworker() -> bool:
    """Makes ``model.fit`` work under ``MultiWorkerMirroredStrategy`` (Keras 3.0 to 3.15).

    Keras' TensorFlow trainer reduces with ``strategy.reduce`` in two places that fail with
    collective all-reduce across workers:

    1. ``_maybe_symbolic_build`` reduces the whole first ``(x, y)`` batch, a structure of
       ``PerReplica`` values ("Attempt to convert a value (PerReplica...)"); building only
       needs shapes, so one replica's local batch is used instead.
    2. ``reduce_per_replica`` reduces scalar losses and metrics with ``axis=0`` ("Invalid
       reduction dimension 0 for input with 0 dimensions"); scalars are reduced with
       ``axis=None``.

    Both replacements are the upstream code with that one change. Outside the version range
    nothing is patched and a later Keras is trusted to have fixed it.

    Returns:
        Whether the patch is in place.
    """
    global _patched
    if _patched:
        return True
    version = _keras_version()
    if not (_MWMS_PATCH_RANGE[0] <= version < _MWMS_PATCH_RANGE[1]):
        log.info("Keras %s.%s: MultiWorkerMirroredStrategy fit patch not applied.", *version)
        return False
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy):
            def reduce_one(value):
                if not tf_trainer._is_per_replica_instance(value):
                    return value
                rank = strategy.experimental_local_results(value)[0].shape.rank
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tree.map_structure(reduce_one, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _patched = True
    return True


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of a strategy (``MultiWorkerMirroredStrategy``, not its alias)."""
    # The exported classes' __name__ is sometimes an internal alias
    # (MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy).
    for cls, name in ((tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                      (tf.distribute.MirroredStrategy, "MirroredStrategy"),
                      (tf.distribute.TPUStrategy, "TPUStrategy"),
                      (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy")):
        if isinstance(strategy, cls):
            return name
    return type(strategy).__name__ if tf.distribute.has_strategy() else "default (one device)"


def _short_device(name: str) -> str:
    # "/job:localhost/replica:0/task:0/device:CPU:0" -> "CPU:0": the job and task are the
    # same for every device of one process.
    return name.rsplit("device:", 1)[-1]


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    """The strategy, its replicas in sync and this process's devices, for one console line.

    Args:
        strategy: A ``tf.distribute.Strategy``.

    Returns:
        For example ``"MirroredStrategy, 2 replica(s) in sync (devices: CPU:0, CPU:1)"`` or
        ``"default strategy, 1 replica(s) in sync (device: CPU:0)"``.
    """
    name = strategy_name(strategy)
    try:
        devices = [_short_device(d) for d in strategy.extended.worker_devices]
    except (AttributeError, RuntimeError, NotImplementedError):
        # The default strategy has no device list: TensorFlow places on the first GPU, if any.
        first = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))
        devices = [_short_device(first[0].name)] if first else []
        name = "default strategy" if name.startswith("default") else name
    text = f"{name}, {strategy.num_replicas_in_sync} replica(s) in sync"
    cluster = _tf_config().get("cluster", {})
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    if name == "MultiWorkerMirroredStrategy" and workers > 1:
        task = _tf_config().get("task", {})
        where = f"{task.get('type', 'worker')} {task.get('index', 0)}"
        return f"{text} over {workers} workers (this is {where}: {', '.join(devices)})"
    label = "device" if len(devices) == 1 else "devices"
    return f"{text} ({label}: {', '.join(devices)})" if devices else text
