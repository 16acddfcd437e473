"""Find a TFLite interpreter and open the bundle's backbone on the CPU or the Edge TPU.

Interpreter packages are tried in this order, each imported only when first needed:
``ai_edge_litert.interpreter`` → ``tflite_runtime.interpreter`` → ``tensorflow.lite`` (TensorFlow is
imported only if neither of the others is installed). ``METALITE_TFLITE=ai_edge_litert|tflite_runtime|
tensorflow`` forces one.

On the CPU the backbone runs on the XNNPACK delegate, int8 included: the interpreter's default delegate
where it takes int8 (ai-edge-litert, tf.lite), else one made by ``metalite.runtime.xnnpack`` with int8
switched on (tflite-runtime 2.14, whose default delegate is float-only). ``METALITE_XNNPACK=0`` keeps
the interpreter's defaults. ``Acceleration`` records what was chosen and why; ``describe`` says it in words.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

from metalite.common.errors import one_line

from . import xnnpack
from .errors import BundleError, DelegateError, InterpreterNotFoundError
from .nativelog import native_stderr_to_log

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
DELEGATES = ("auto", "cpu", "edgetpu")
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}
DISTRIBUTIONS = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}
log = logging.getLogger("metalite.runtime")


class EdgeTPUFallbackWarning(RuntimeWarning):
    """Issued once per classifier when ``delegate="auto"`` could not use the Edge TPU and runs on the CPU."""


@dataclass(frozen=True)
class Backend:
    """An interpreter package: ``name`` (one of BACKENDS), its ``Interpreter`` class, ``load_delegate``,
    ``OpResolverType`` (None if the package lacks it), installed ``version`` and ``why`` it was chosen."""

    name: str
    Interpreter: Any
    load_delegate: Callable
    OpResolverType: Any = None
    version: str | None = None
    why: str = ""


@dataclass(frozen=True)
class Acceleration:
    """How one model runs: ``interpreter`` + ``version``, ``device`` ("cpu"/"edgetpu"), ``delegate``
    ("xnnpack", "edgetpu" or "none"), ``delegated`` ("whole graph", "partial", "no" or "unknown"),
    ``xnnpack_int8`` (who enabled XNNPACK's int8 path, or why not) and ``why`` this interpreter."""

    interpreter: str
    version: str | None
    device: str
    model: str
    delegate: str
    delegated: str
    xnnpack_int8: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


_backend_cache: dict = {}


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(DISTRIBUTIONS[name])
    except Exception:  # noqa: BLE001 - informative only
        return None


def _import_backend(name: str, why: str) -> Backend:
    with native_stderr_to_log():  # a TensorFlow import prints absl notices on fd 2
        if name == "tensorflow":
            tf = importlib.import_module("tensorflow")
            return Backend(
                name,
                tf.lite.Interpreter,
                tf.lite.experimental.load_delegate,
                getattr(tf.lite.experimental, "OpResolverType", None),
                _version(name),
                why,
            )
        mod = importlib.import_module(f"{name}.interpreter")
    return Backend(
        name,
        mod.Interpreter,
        mod.load_delegate,
        getattr(mod, "OpResolverType", None),
        _version(name),
        why,
    )


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
        raise InterpreterNotFoundError(
            f"unknown interpreter {name!r}; choose one of {', '.join(BACKENDS)}"
        )
    key = name or "*"
    if key in _backend_cache:
        return _backend_cache[key]
    errors, missing = [], []
    for cand in [name] if name else BACKENDS:
        if name:
            why = (
                f"METALITE_TFLITE={name}"
                if name == os.environ.get("METALITE_TFLITE")
                else f"{name} requested"
            )
        else:
            why = (
                "first installed of "
                + ", ".join(BACKENDS)
                + (f"; not installed: {', '.join(missing)}" if missing else "")
            )
        try:
            backend = _import_backend(cand, why)
        except ImportError as e:
            errors.append(f"{cand} ({one_line(e)})")
            missing.append(cand)
            continue
        _backend_cache[key] = backend
        return backend
    raise InterpreterNotFoundError(
        "no TFLite interpreter found: pip install ai-edge-litert (or tflite-runtime with numpy<2); tried "
        + "; ".join(errors)
    )


def edgetpu_library() -> str:
    """Return the file name of the Edge TPU runtime library on this OS (``libedgetpu.so.1`` on Linux)."""
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def _delegated(interp) -> str:
    """Whether DELEGATE nodes compute the model's output from its input ("whole graph"), some of it, or none."""
    try:
        ops = interp._get_ops_details()  # present in tflite-runtime, ai-edge-litert and tf.lite
        ins = {int(d["index"]) for d in interp.get_input_details()}
        outs = {int(d["index"]) for d in interp.get_output_details()}
    except Exception:  # noqa: BLE001 - a package without it: say so rather than guess
        return "unknown"
    nodes = [o for o in ops if o.get("op_name") == "DELEGATE"]
    if not nodes:
        return "no"
    # one delegate node reading the model's input and writing its output has taken every op in between
    one = (
        len(nodes) == 1
        and ins <= {int(i) for i in nodes[0]["inputs"]}
        and outs <= {int(i) for i in nodes[0]["outputs"]}
    )
    return "whole graph" if one else "partial"


def _cpu_plan(backend: Backend, num_threads) -> tuple:
    """(extra Interpreter kwargs, XNNPACK delegate or None, who enables XNNPACK's int8 path) for the CPU."""
    if os.environ.get("METALITE_XNNPACK", "1") == "0":
        return {}, None, "not touched (METALITE_XNNPACK=0): the interpreter's default"
    if backend.name not in xnnpack.WRAPPER_MODULES:
        return {}, None, "the interpreter's default XNNPACK delegate"
    delegate, why = xnnpack.int8_delegate(backend.name, num_threads)
    if delegate is None or backend.OpResolverType is None:
        return {}, None, f"the interpreter's default ({why})"
    # the default delegate would be applied on top otherwise; ours already covers float and int8
    kwargs = {
        "experimental_op_resolver_type": backend.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    }
    return kwargs, delegate, f"enabled by metalite ({why})"


def cpu_delegate(backend: Backend, num_threads: int | None = None) -> str:
    """In words, the delegate a model opened on the CPU with ``backend`` gets (for reports naming the stack)."""
    if os.environ.get("METALITE_XNNPACK", "1") == "0":
        return "the interpreter's defaults (METALITE_XNNPACK=0)"
    return "XNNPACK, int8 path: " + _cpu_plan(backend, num_threads)[2]


def _create(backend: Backend, model_path, kwargs: dict):
    name = os.path.basename(str(model_path))
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated in favour of ai_edge_litert
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"(?s).*tf.lite.Interpreter is deprecated")
            interp = backend.Interpreter(model_path=str(model_path), **kwargs)
            interp.allocate_tensors()
    except Exception as e:
        raise BundleError(
            f"{name}: the {backend.name} interpreter cannot load it ({one_line(e)})"
        ) from None
    return interp


def open_model(
    model_path,
    num_threads: int | None = None,
    delegates: list | None = None,
    backend: Backend | None = None,
    device: str = "cpu",
) -> tuple:
    """Create an interpreter for one .tflite file, allocate its tensors, and say how it runs.

    Args:
      model_path: path of the .tflite file.
      num_threads: CPU threads for the interpreter, or None for the interpreter's default.
      delegates: loaded delegates (from ``Backend.load_delegate``), or None for the CPU with XNNPACK
        (int8 enabled where the build's default delegate lacks it, see the module docstring).
      backend: the interpreter package, or None for ``get_backend()``.
      device: what ``delegates`` target, for the record ("cpu" or "edgetpu").
    Returns:
      ``(interpreter, Acceleration)``.
    Raises:
      BundleError: the interpreter cannot load or allocate the model (message names the file).
    """
    backend = backend or get_backend()
    kwargs = {}
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        kwargs["num_threads"] = int(num_threads)
    with native_stderr_to_log():
        if delegates:
            kwargs["experimental_delegates"] = list(delegates)
            int8 = "not used (an accelerator delegate is given)"
        else:
            extra, xnn, int8 = _cpu_plan(backend, num_threads)
            if xnn is not None:
                try:
                    interp = _create(
                        backend, model_path, {**kwargs, **extra, "experimental_delegates": [xnn]}
                    )
                except (
                    BundleError
                ) as e:  # the model is checked again below, with the interpreter's defaults
                    int8 = f"the interpreter's default (the int8 XNNPACK delegate failed: {e})"
                    xnn = None
        if delegates or xnn is None:
            interp = _create(backend, model_path, kwargs)
    delegated = _delegated(interp)
    kind = (
        "edgetpu"
        if device == "edgetpu"
        else (
            "xnnpack"
            if delegated not in ("no", "unknown")
            else "none"
            if delegated == "no"
            else "unknown"
        )
    )
    acc = Acceleration(
        backend.name,
        backend.version,
        device,
        os.path.basename(str(model_path)),
        kind,
        delegated,
        int8,
        backend.why,
    )
    log.info("%s", describe(acc))
    return interp, acc


def make_interpreter(
    model_path,
    num_threads: int | None = None,
    delegates: list | None = None,
    backend: Backend | None = None,
):
    """``open_model(...)[0]``: an allocated interpreter for one .tflite file (see ``open_model``)."""
    return open_model(model_path, num_threads, delegates, backend)[0]


def describe(acc: Acceleration) -> str:
    """One line: interpreter, version, device, delegate and why, e.g. for ``--verbose`` and ``inspect``."""
    where = "the Edge TPU" if acc.device == "edgetpu" else "the CPU"
    if acc.delegate == "xnnpack":
        how = f"XNNPACK delegate ({acc.delegated}; int8 path: {acc.xnnpack_int8})"
    elif acc.delegate == "none":
        how = f"built-in kernels, no delegate (XNNPACK int8 path: {acc.xnnpack_int8})"
    else:
        how = f"{acc.delegate} delegate ({acc.delegated})"
    return (
        f"{acc.model}: {acc.interpreter} {acc.version or '(version unknown)'} on {where}, {how}; "
        f"interpreter chosen as {acc.why}"
    )


def open_backbone(
    bundle, num_threads: int | None = None, delegate: str = "auto", backend: Backend | None = None
):
    """Open the bundle's backbone on the Edge TPU when possible/requested, else on the CPU.

    Args:
      bundle: a ``metalite.runtime.bundle.Bundle``.
      num_threads: CPU threads, or None for the interpreter's default.
      delegate: ``"auto"`` (Edge TPU if the bundle has ``backbone_edgetpu.tflite`` and ``libedgetpu``
        loads, otherwise CPU with one ``EdgeTPUFallbackWarning``; no warning when the bundle has no Edge
        TPU model), ``"cpu"`` or ``"edgetpu"`` (raise ``DelegateError`` if either is missing).
      backend: the interpreter package, or None for ``get_backend()``.
    Returns:
      ``(interpreter, device, Acceleration)`` with device ``"edgetpu"`` or ``"cpu"``.
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
                with native_stderr_to_log():
                    tpu = backend.load_delegate(lib)
            except Exception as e:
                problem = f"the Edge TPU runtime {lib} could not be loaded ({one_line(e)}); install libedgetpu1-std"
            else:
                interp, acc = open_model(
                    bundle.edgetpu_path, num_threads, [tpu], backend, device="edgetpu"
                )
                return interp, "edgetpu", acc
        if delegate == "edgetpu":
            raise DelegateError(f"delegate='edgetpu': {problem}")
        if bundle.edgetpu_path is not None:
            warnings.warn(
                f"{problem}; running {os.path.basename(str(bundle.backbone_path))} on the CPU",
                EdgeTPUFallbackWarning,
                stacklevel=3,
            )
    interp, acc = open_model(bundle.backbone_path, num_threads, None, backend)
    return interp, "cpu", acc
