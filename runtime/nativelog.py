"""Keep the interpreter libraries' own chatter off the terminal while the runtime opens a model.

TFLite's C++ logger writes lines such as ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``
straight to file descriptor 2, past Python's ``sys.stderr``; ``TF_CPP_MIN_LOG_LEVEL`` does not reach it
(measured for ai-edge-litert 2.3, tflite-runtime 2.14 and tf.lite 2.21). So fd 2 is pointed at a
temporary file around the native calls; afterwards informational lines go to the ``metalite.runtime``
logger (shown by ``metalite adapt/predict --verbose``) and every other line is written back to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

log = logging.getLogger("metalite.runtime")

# TFLite's minimal logger ("INFO: ..."), absl's info lines ("I0000 00:00:..." from a TensorFlow import)
# and absl's one-time notice about its own initialisation.
_CHATTER = re.compile(
    r"^(INFO: |VERBOSE: |I\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog)"
)


def is_chatter(line: str) -> bool:
    """True for an informational line of the interpreter libraries (not a warning or an error)."""
    return bool(_CHATTER.match(line))


@contextlib.contextmanager
def native_stderr_to_log():
    """Capture fd 2 for the duration; then log chatter at INFO and write everything else back to stderr.

    Does nothing (no capture) if fd 2 cannot be duplicated, e.g. in a process without a stderr.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            _replay(text)


def _replay(text: str) -> None:
    other = []
    for line in text.splitlines():
        if is_chatter(line):
            log.info("interpreter: %s", line)
        elif line.strip():
            other.append(line)
    if other:
        sys.stderr.write("\n".join(other) + "\n")
        sys.stderr.flush()
