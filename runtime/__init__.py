"""metalite.runtime: few-shot learning on the device with numpy and a TFLite interpreter (never TensorFlow).

    from metalite.runtime import FewShotClassifier
    clf = FewShotClassifier("bundle_dir").fit(images, labels)
    clf.predict(query_images)

Importing this package imports numpy only; the interpreter package (ai-edge-litert, tflite-runtime,
or TensorFlow's as a last resort) is imported when the first classifier is created.
"""

from .bundle import Bundle, open_bundle
from .cache import EmbeddingCache
from .classifier import FewShotClassifier
from .errors import (
    BundleError,
    DelegateError,
    InputError,
    InterpreterNotFoundError,
    MetaliteError,
    NotFittedError,
    StateError,
    UnknownClassError,
)
from .interpreter import EdgeTPUFallbackWarning
from .version import __version__

__all__ = [
    "FewShotClassifier",
    "Bundle",
    "open_bundle",
    "EmbeddingCache",
    "EdgeTPUFallbackWarning",
    "MetaliteError",
    "BundleError",
    "StateError",
    "InputError",
    "NotFittedError",
    "UnknownClassError",
    "DelegateError",
    "InterpreterNotFoundError",
    "__version__",
]
