"""The errors the workstation side raises on purpose; each ``str()`` is one line naming the problem.

They belong to the runtime's family (``metalite.runtime.errors.MetaliteError``: catch it to catch them
all) and to the builtin that fits, so ``except ValueError`` keeps working. The CLI shows any of them as
one line, no traceback (``metalite.tools.clikit.fail_cleanly``).
"""

from __future__ import annotations

from metalite.common.errors import MetaliteError


class DataError(MetaliteError, ValueError):
    """Bad data spec or unusable images; the message names the path and the problem."""


class ModelDirError(MetaliteError, ValueError):
    """Not a metalite model directory, a damaged one, or nothing in it to resume."""


class CompressError(MetaliteError, ValueError):
    """Bad compression settings or input model."""


class SettingsError(MetaliteError, ValueError):
    """A training setting that cannot work (unknown algorithm, a count below 1)."""


class StrategyError(MetaliteError, ValueError):
    """A ``tf.distribute`` strategy that cannot run this configuration."""


class Interrupted(MetaliteError):
    """Training stopped by Ctrl-C after saving a checkpoint (and a usable model directory when it could)."""

    exit_code = 130  # the shell's code for a process ended by SIGINT
