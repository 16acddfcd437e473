"""What every ``metalite`` command shares: one-line errors, ``--verbose``, progress on stderr.

Light on purpose (click and ``metalite.runtime.errors`` only): the device commands use it too.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from metalite.common.errors import MetaliteError
from metalite.runtime.errors import EXTRA_OF_MODULE, MissingExtraError, missing_extra
from metalite.runtime.plural import plural  # noqa: F401  (re-exported: every command counts things)


def fail_cleanly(fn):
    """Show metalite's deliberate errors (every ``MetaliteError``), file-system errors and a missing extra's
    package (``this command needs X: pip install 'metalite[Y]'``) as one line, no traceback.

    The exit code is 1, or the error's own ``exit_code`` (130 for a training run stopped by Ctrl-C).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MetaliteError as e:
            err = click.ClickException(str(e))
            err.exit_code = getattr(e, "exit_code", 1)
            raise err from None
        except OSError as e:
            raise click.ClickException(
                f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")
            ) from None
        except ImportError as e:
            needed = missing_extra(e)
            if needed is None:
                raise
            raise click.ClickException(str(needed)) from None

    return wrapper


def need(module: str, extra: str) -> None:
    """Fail now, in one line, unless ``module`` (of metalite's extra ``extra``) can be imported."""
    try:
        __import__(module)
    except ImportError:
        raise click.ClickException(
            str(MissingExtraError(EXTRA_OF_MODULE.get(module, (module,))[0], extra))
        ) from None


def _runtime_log(verbose: bool) -> None:
    """The runtime's log (interpreter choice, the interpreter libraries' own lines) on stderr only if verbose."""
    if not verbose:
        # trims a TensorFlow import's own absl lines (the tf.lite fallback); TFLite's lines are captured anyway
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger("metalite.runtime")
    if verbose and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("metalite: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _set_verbose(ctx, param, value):
    if value:
        os.environ["METALITE_VERBOSE"] = (
            "1"  # read when TensorFlow is imported (metalite.export.tfcompat)
        )
    _runtime_log(
        bool(os.environ.get("METALITE_VERBOSE"))
    )  # a group-level --verbose holds for the command
    return value


def verbose_option(fn):
    """``--verbose``/``-v``: show what TensorFlow, its converter and the interpreter library print, and which
    interpreter and delegate run the backbone and why (all hidden by default)."""
    return click.option(
        "--verbose",
        "-v",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_verbose,
        help="show TensorFlow's and the interpreter library's own output, and which interpreter "
        "and delegate run the backbone and why (hidden by default)",
    )(fn)


def console_progress(quiet: bool = False):
    """Progress on stderr for a command (``metalite.tools.progress``), or none at all when ``quiet``."""
    if quiet:
        return None
    from .progress import ConsoleProgress

    return ConsoleProgress()
