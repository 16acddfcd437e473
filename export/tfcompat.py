"""Import TensorFlow with legacy Keras (tf_keras, which TF-MOT needs), quietly: every TensorFlow user imports it here.

``export`` is the lowest layer that needs TensorFlow, so the module lives here and ``training`` imports it
downstream. Quiet unless ``METALITE_VERBOSE`` is set (``metalite --verbose``): TensorFlow's C++ start-up
lines (the oneDNN notice, twice; CUDA probing on a CPU-only install) reach stderr before any log setting
applies, so the import runs with file descriptor 2 on a temporary file (shown if the import fails); later
C++ logging is limited to fatal errors and the Python loggers to errors.
"""

import os
import sys
import tempfile
from contextlib import contextmanager

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
VERBOSE = bool(os.environ.get("METALITE_VERBOSE"))
if not VERBOSE:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


@contextmanager
def native_stderr_captured():
    """Send what native code writes to stderr into a temporary file; replay it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if VERBOSE:
    import tensorflow as tf
    import tf_keras as keras
else:
    with native_stderr_captured():
        import tensorflow as tf
        import tf_keras as keras
    tf.get_logger().setLevel("ERROR")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)

__all__ = ["tf", "keras", "VERBOSE", "native_stderr_captured"]
