"""An XNNPACK delegate with int8 enabled, for interpreter builds whose default XNNPACK delegate is float-only.

tflite-runtime 2.14 (the wheel Raspberry Pi OS users get) was built without XNNPACK's QS8 option: its
default delegate takes float graphs only, so a full-int8 model runs on the built-in int8 kernels, slower
than the float model. The XNNPACK C API is exported by its interpreter library, so we create the delegate
ourselves with the ``TFLITE_XNNPACK_DELEGATE_FLAG_QS8`` bit set and hand it to the interpreter.

The options struct changed layout between TFLite versions (a ``runtime_flags`` field was inserted later),
so the flag is written where tflite-runtime 2.14 keeps it (the uint32 after ``num_threads``) and accepted
only if ``TfLiteXNNPackDelegateGetFlags`` then reports exactly the default flags plus QS8.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import sys

QS8 = 0x1  # TFLITE_XNNPACK_DELEGATE_FLAG_QS8: signed int8 (per-channel) operators
_OPTIONS_BYTES = (
    256  # larger than any version's TfLiteXNNPackDelegateOptions; returned in memory on every ABI
)
_FLAGS_OFFSET = 4  # int32 num_threads, then uint32 flags (TFLite 2.10 - 2.17 layout)
_SYMBOLS = (
    "TfLiteXNNPackDelegateOptionsDefault",
    "TfLiteXNNPackDelegateCreate",
    "TfLiteXNNPackDelegateDelete",
    "TfLiteXNNPackDelegateGetFlags",
)
# The module of each interpreter package whose shared library exports the XNNPACK C API.
WRAPPER_MODULES = {"tflite_runtime": "tflite_runtime._pywrap_tensorflow_interpreter_wrapper"}


class _Options(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * _OPTIONS_BYTES)]


@functools.cache
def _library(backend_name: str):
    """The interpreter's own shared library (already loaded by its package) with the XNNPACK C API, or None."""
    mod_name = WRAPPER_MODULES.get(backend_name)
    if mod_name is None:
        return None
    try:
        mod = sys.modules.get(mod_name) or importlib.import_module(mod_name)
        lib = ctypes.CDLL(
            mod.__file__
        )  # the same handle the package holds: dlopen of a loaded file
    except (ImportError, OSError, AttributeError):
        return None
    if not all(hasattr(lib, s) for s in _SYMBOLS):
        return None
    lib.TfLiteXNNPackDelegateOptionsDefault.restype = _Options
    lib.TfLiteXNNPackDelegateOptionsDefault.argtypes = []
    lib.TfLiteXNNPackDelegateCreate.restype = ctypes.c_void_p
    lib.TfLiteXNNPackDelegateCreate.argtypes = [ctypes.c_void_p]
    lib.TfLiteXNNPackDelegateDelete.restype = None
    lib.TfLiteXNNPackDelegateDelete.argtypes = [ctypes.c_void_p]
    lib.TfLiteXNNPackDelegateGetFlags.restype = ctypes.c_uint32
    lib.TfLiteXNNPackDelegateGetFlags.argtypes = [ctypes.c_void_p]
    return lib


class XNNPackDelegate:
    """Owns one ``TfLiteDelegate*``; usable in ``Interpreter(experimental_delegates=[...])``.

    The interpreter keeps its delegates alive and releases itself first (see tflite-runtime's
    ``Interpreter.__del__``), so the delegate is deleted after the graph that uses it.
    """

    def __init__(self, lib, pointer: int, flags: int):
        self._lib, self._ptr, self.flags = lib, pointer, flags

    def _get_native_delegate_pointer(self) -> int:
        return self._ptr

    def __del__(self):
        if getattr(self, "_ptr", None):
            self._lib.TfLiteXNNPackDelegateDelete(self._ptr)
            self._ptr = None


@functools.cache
def default_flags(backend_name: str) -> int | None:
    """The flags of the backend's default XNNPACK delegate, or None if its library doesn't export the C API."""
    lib = _library(backend_name)
    if lib is None:
        return None
    probe = lib.TfLiteXNNPackDelegateCreate(
        None
    )  # NULL options = the build's defaults, layout-independent
    if not probe:
        return None
    try:
        return int(lib.TfLiteXNNPackDelegateGetFlags(probe))
    finally:
        lib.TfLiteXNNPackDelegateDelete(probe)


def int8_delegate(backend_name: str, num_threads: int | None) -> tuple:
    """``(XNNPackDelegate or None, why)``: an XNNPACK delegate with QS8 for ``backend_name``.

    None when the library doesn't export the C API, when its default delegate already runs int8 (nothing
    to add), or when the options layout is not the one expected (the flag didn't land in ``flags``).
    """
    lib = _library(backend_name)
    if lib is None:
        return None, "the interpreter library does not export the XNNPACK C API"
    base = default_flags(backend_name)
    if base is None:
        return None, "the XNNPACK delegate could not be created"
    if base & QS8:
        return None, "the default XNNPACK delegate already runs int8"
    opts = lib.TfLiteXNNPackDelegateOptionsDefault()
    threads = (
        int(num_threads) if num_threads and int(num_threads) > 1 else 0
    )  # no thread pool for 1 thread
    ctypes.c_int32.from_buffer(opts, 0).value = threads
    flags = ctypes.c_uint32.from_buffer(opts, _FLAGS_OFFSET)
    flags.value = flags.value | QS8
    ptr = lib.TfLiteXNNPackDelegateCreate(ctypes.byref(opts))
    if not ptr:
        return None, "TfLiteXNNPackDelegateCreate failed"
    got = int(lib.TfLiteXNNPackDelegateGetFlags(ptr))
    if got != base | QS8:
        lib.TfLiteXNNPackDelegateDelete(ptr)
        return None, f"unexpected XNNPACK options layout (flags {got:#x}, expected {base | QS8:#x})"
    return XNNPackDelegate(
        lib, ptr, got
    ), "the default XNNPACK delegate of this build is float-only"
