"""metalite: meta-train a few-shot learner, compress it, ship it, adapt it on the device.

Subpackages: ``metalite.training`` (data, models, meta-learners, compression; needs TensorFlow),
``metalite.export`` (TFLite bundles; needs TensorFlow), ``metalite.runtime`` (numpy + a TFLite
interpreter only; ``metalite.runtime.sync`` links a device to a fleet server), ``metalite.fleet``
(that server; FastAPI) and ``metalite.tools`` (the ``metalite`` CLI).
"""
__version__ = "0.1.0"
