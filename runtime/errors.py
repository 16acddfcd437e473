"""The errors ``metalite.runtime`` raises on purpose; each ``str()`` is one line that says what is wrong.

Every class derives from ``MetaliteError`` (``metalite.common.errors``, the base of every part's errors: catch
it to catch them all) and from the builtin that fits,
so ``except ValueError`` keeps working for bad bundles, bad state files and bad input.
"""

from __future__ import annotations

from metalite.common.errors import (  # the family's base and its one-line form
    MetaliteError,
    one_line,
)

__all__ = [
    "MetaliteError",
    "one_line",
    "BundleError",
    "StateError",
    "InputError",
    "NotFittedError",
    "UnknownClassError",
    "DelegateError",
    "InterpreterNotFoundError",
    "MissingExtraError",
    "missing_extra",
    "EXTRA_OF_MODULE",
]


class BundleError(MetaliteError, ValueError):
    """A bundle is missing, corrupt, of an unknown format, or doesn't match the interpreter; names the file."""


class StateError(MetaliteError, ValueError):
    """A saved adaptation state is truncated, corrupt, of an unknown version or belongs to another bundle."""


class InputError(MetaliteError, ValueError):
    """Images or labels passed to the classifier cannot be used (empty, wrong shape/channels, NaN, unreadable)."""


class NotFittedError(MetaliteError, ValueError):
    """``predict``/``predict_proba``/``save`` called before any class was learned."""


class UnknownClassError(MetaliteError, ValueError):
    """``remove_class`` got a label the classifier doesn't know."""


class DelegateError(MetaliteError, RuntimeError):
    """The Edge TPU was requested (``delegate="edgetpu"``) but the bundle or ``libedgetpu`` lacks it."""


class InterpreterNotFoundError(MetaliteError, ImportError):
    """No TFLite interpreter package (ai-edge-litert, tflite-runtime or tensorflow) is installed."""


class MissingExtraError(MetaliteError, ImportError):
    """A package of one of metalite's extras is not installed; says which and the pip line that adds it."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"this command needs {module}: pip install 'metalite[{extra}]'")
        self.module, self.extra = module, extra


# top-level module -> (the name users know it by, the extra that installs it)
EXTRA_OF_MODULE = {
    "tensorflow": ("tensorflow", "train"),
    "tf_keras": ("tf-keras", "train"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "train"),
    "matplotlib": ("matplotlib", "train"),
    "absl": ("tensorflow", "train"),
    "PIL": ("pillow", "images"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "cryptography": ("cryptography", "serve"),
}


def missing_extra(exc: ImportError, extra: str | None = None) -> MissingExtraError | None:
    """The ``MissingExtraError`` for an ImportError of a module some extra installs (``extra`` overrides which
    extra to name), else None."""
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    module, default = EXTRA_OF_MODULE[top]
    return MissingExtraError(module, extra or default)
