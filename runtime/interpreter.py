"""Find a TFLite interpreter and open the bundle's backbone on the CPU or the Edge TPU.

Interpreter packages are tried in this order, each imported only when first needed:
``ai_edge_litert.interpreter`` → ``tflite_runtime.interpreter`` → ``tensorflow.lite`` (TensorFlow is
imported only if neither of the others is installed). ``METALITE_TFLITE=ai_edge_litert|tflite_runtime|
tensorflow`` forces one.
"""
from __future__ import annotations

import importlib
import os
import platform
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from .errors import BundleError, DelegateError, InterpreterNotFoundError, one_line

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
DELEGATES = ("auto", "cpu", "edgetpu")
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class EdgeTPUFallbackWarning(RuntimeWarning):
    """Issued once per classifier when ``delegate="auto"`` could not use the Edge TPU and runs on the CPU."""


@dataclass(frozen=True)
class Backend:
    """An interpreter package: ``name`` (one of BACKENDS), its ``Interpreter`` class and ``load_delegate``."""

    name: str
    Interpreter: Any
    load_delegate: Callable


_backend_cache: dict = {}


def _import_backend(name: str) -> Backend:
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return Backend(name, tf.lite.Interpreter, tf.lite.experimental.load_delegate)
    mod = importlib.import_module(f"{name}.interpreter")
    return Backend(name, mod.Interpreter, mod.load_delegate)


def get_backend(name: str | None = None) -> Backend:
    """Return the interpreter package to use.

    Args:
      name: one of ``BACKENDS`` to force it, or None for the first installed one (``$METALITE_TFLITE``
        if set, else the order above).
    Returns:
      A ``Backend``; the result is cached per name.
    Raises:
      InterpreterNotFoundError: the requested package, or every package, is missing.
    """
    name = name or os.environ.get("METALITE_TFLITE") or None
    if name is not None and name not in BACKENDS:
        raise InterpreterNotFoundError(f"unknown interpreter {name!r}; choose one of {', '.join(BACKENDS)}")
    key = name or "*"
    if key in _backend_cache:
        return _backend_cache[key]
    errors = []
    for cand in [name] if name else BACKENDS:
        try:
            backend = _import_backend(cand)
        except ImportError as e:
            errors.append(f"{cand} ({one_line(e)})")
            continue
        _backend_cache[key] = backend
        return backend
    raise InterpreterNotFoundError(
        "no TFLite interpreter found: pip install ai-edge-litert (or tflite-runtime with numpy<2); tried "
        + "; ".join(errors))


def edgetpu_library() -> str:
    """Return the file name of the Edge TPU runtime library on this OS (``libedgetpu.so.1`` on Linux)."""
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def make_interpreter(model_path, num_threads: int | None = None, delegates: list | None = None,
                     backend: Backend | None = None):
    """Create an interpreter for one .tflite file and allocate its tensors.

    Args:
      model_path: path of the .tflite file.
      num_threads: CPU threads for the interpreter, or None for the interpreter's default.
      delegates: loaded delegates (from ``Backend.load_delegate``) or None.
      backend: the interpreter package, or None for ``get_backend()``.
    Returns:
      An allocated ``Interpreter``.
    Raises:
      BundleError: the interpreter cannot load or allocate the model (message names the file).
    """
    backend = backend or get_backend()
    kwargs = {"model_path": str(model_path)}
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        kwargs["num_threads"] = int(num_threads)
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated in favour of ai_edge_litert
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            interp = backend.Interpreter(**kwargs)
        interp.allocate_tensors()
    except Exception as e:
        raise BundleError(f"{os.path.basename(str(model_path))}: the {backend.name} interpreter cannot load it "
                          f"({one_line(e)})") from None
    return interp


def open_backbone(bundle, num_threads: int | None = None, delegate: str = "auto", backend: Backend | None = None):
    """Open the bundle's backbone on the Edge TPU when possible/requested, else on the CPU.

    Args:
      bundle: a ``metalite.runtime.bundle.Bundle``.
      num_threads: CPU threads, or None for the interpreter's default.
      delegate: ``"auto"`` (Edge TPU if the bundle has ``backbone_edgetpu.tflite`` and ``libedgetpu``
        loads, otherwise CPU with one ``EdgeTPUFallbackWarning``; no warning when the bundle has no Edge
        TPU model), ``"cpu"`` or ``"edgetpu"`` (raise ``DelegateError`` if either is missing).
      backend: the interpreter package, or None for ``get_backend()``.
    Returns:
      ``(interpreter, device)`` with device ``"edgetpu"`` or ``"cpu"``.
    Raises:
      DelegateError, BundleError, InterpreterNotFoundError, ValueError (unknown ``delegate``).
    """
    if delegate not in DELEGATES:
        raise ValueError(f"delegate must be one of {', '.join(DELEGATES)}, got {delegate!r}")
    backend = backend or get_backend()
    if delegate in ("auto", "edgetpu"):
        problem = None
        if bundle.edgetpu_path is None:
            problem = f"bundle {bundle.source} has no Edge TPU model (backbone_edgetpu.tflite; export with Edge TPU compilation)"
        else:
            lib = edgetpu_library()
            try:
                tpu = backend.load_delegate(lib)
            except Exception as e:
                problem = f"the Edge TPU runtime {lib} could not be loaded ({one_line(e)}); install libedgetpu1-std"
            else:
                return make_interpreter(bundle.edgetpu_path, num_threads, [tpu], backend), "edgetpu"
        if delegate == "edgetpu":
            raise DelegateError(f"delegate='edgetpu': {problem}")
        if bundle.edgetpu_path is not None:
            warnings.warn(f"{problem}; running {os.path.basename(str(bundle.backbone_path))} on the CPU",
                          EdgeTPUFallbackWarning, stacklevel=3)
    return make_interpreter(bundle.backbone_path, num_threads, None, backend), "cpu"
