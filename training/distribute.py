"""Scale-out meta-training with ``tf.distribute`` (``metalite train --strategy``; docs/distributed.md).

- ``default``: no strategy, one device; the trainer calls ``learner.train_step`` exactly as before.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local devices (GPUs, or logical CPUs).
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines named in ``TF_CONFIG``.

One step with N replicas (``strategy.num_replicas_in_sync``) draws N episodes; replica i takes
episode i, computes its meta-gradient with ``learner.compute_gradients`` (the differentiable
``query_loss``), the gradients are all-reduced (SUM, then divided by N: the mean) and applied once.
So one N-replica step over e1..eN is one single-device step with the mean of the N episode
gradients. Every worker draws the same N episodes from the same seeded sampler and keeps only its
replicas' ones, so all workers' sampler states agree and any worker's checkpoint resumes the run.

Only learners with a differentiable ``query_loss`` (protonet, anil) are supported: fomaml and reptile
run eager inner loops that move the shared weights themselves, which mirrored variables forbid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metalite.export.tfcompat import tf

from .errors import StrategyError
from .settings import STRATEGIES, check_supported


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name`` (one of STRATEGIES).

    ``multiworker`` reads the cluster from ``TF_CONFIG`` and must be created before TensorFlow
    initializes its devices (at program start, which is where ``metalite train`` creates it).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # AUTO: ring collectives between CPU hosts, NCCL where workers have GPUs.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def worker_info(strategy) -> tuple:
    """(task_type, task_id, is_chief); (None, 0, True) outside a multi-worker cluster.

    The chief is the ``chief`` task if the cluster has one, else ``worker`` 0 (TF's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, 0, True
    jobs = resolver.cluster_spec().as_dict()
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if not jobs or task_type is None:
        return None, 0, True
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in jobs)
    return task_type, int(task_id), chief


def write_root(out: Path, strategy) -> Path:
    """Where this worker writes: ``out`` on the chief; a fresh temporary directory on the others.

    Every worker must take part in saving (a checkpoint of mirrored variables may run collectives),
    but only the chief's copy is kept: the others write to a private temp dir, removed by
    ``cleanup`` (the pattern of TF's multi-worker guide), so they never clobber the chief's files.
    """
    task_type, task_id, chief = worker_info(strategy)
    if chief:
        return Path(out)
    return Path(tempfile.mkdtemp(prefix=f"metalite-{task_type}{task_id}-"))


def cleanup(root: Path, out: Path) -> None:
    """Remove a non-chief worker's temporary write directory (never ``out`` itself)."""
    if Path(root) != Path(out):
        shutil.rmtree(root, ignore_errors=True)


def weights_digest(variables) -> str:
    """Short fingerprint of the weights' exact bytes (workers in sync print the same one)."""
    h = hashlib.sha256()
    for v in variables:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]


def describe(strategy) -> str:
    """One line: strategy class, replicas, devices, and this worker's role."""
    task_type, task_id, chief = worker_info(strategy)
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has none
        devices = ()
    role = f", {task_type} {task_id}{' (chief)' if chief else ''}" if task_type else ""
    cluster = os.environ.get("TF_CONFIG")
    workers = len(json.loads(cluster).get("cluster", {}).get("worker", [])) if cluster else 1
    return (
        f"strategy {type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s), "
        f"{workers} worker(s), local devices {', '.join(devices) or 'default'}{role}"
    )


class DistributedLearner:
    """Runs a learner's outer step across the replicas of ``strategy``.

    The learner (its models and optimizer) must have been built under ``strategy.scope()``.
    ``train_step(episodes)`` takes exactly ``replicas`` episodes of one shape and returns the mean
    query loss and accuracy over them.
    """

    def __init__(self, learner, strategy):
        check_supported("mirrored", learner.name)
        self.learner, self.strategy = learner, strategy
        self.replicas = strategy.num_replicas_in_sync
        self._fns = {}

    def step(self, sampler) -> dict:
        """One outer update from ``replicas`` new episodes of ``sampler``."""
        return self.train_step([sampler.sample() for _ in range(self.replicas)])

    def train_step(self, episodes) -> dict:
        if len(episodes) != self.replicas:
            raise ValueError(f"{len(episodes)} episodes for {self.replicas} replicas")
        ways = int(episodes[0].ways)
        tensors = [
            (
                tf.constant(e.support_x),
                tf.constant(e.support_y, tf.int32),
                tf.constant(e.query_x),
                tf.constant(e.query_y, tf.int32),
            )
            for e in episodes
        ]
        inputs = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tensors[ctx.replica_id_in_sync_group]
        )
        if ways not in self._fns:
            self._fns[ways] = tf.function(lambda batch: self._distributed_step(batch, ways))
        loss, acc = self._fns[ways](inputs)
        return {"loss": float(loss), "acc": float(acc)}

    def _distributed_step(self, inputs, ways):
        loss, acc = self.strategy.run(self._replica_step, args=(*inputs, ways))
        mean = tf.distribute.ReduceOp.MEAN
        return self.strategy.reduce(mean, loss, axis=None), self.strategy.reduce(
            mean, acc, axis=None
        )

    def _replica_step(self, xs, ys, xq, yq, ways):
        grads, loss, acc = self.learner.compute_gradients(xs, ys, xq, yq, ways)
        variables = self.learner.variables
        ctx = tf.distribute.get_replica_context()
        # The all-reduce sums over replicas; dividing by their number makes it the mean episode gradient.
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads = [g / tf.cast(ctx.num_replicas_in_sync, g.dtype) for g in summed]
        # Already reduced: the optimizer must not all-reduce (sum) them again.
        self.learner.optimizer.apply_gradients(
            zip(grads, variables), skip_gradients_aggregation=True
        )
        return loss, acc
