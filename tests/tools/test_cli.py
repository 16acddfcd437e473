"""What every command shares: one error family shown as one line, bad input refused before TensorFlow loads,
TensorFlow's own output hidden unless --verbose."""

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from metalite.export.errors import ExportError
from metalite.runtime.errors import MetaliteError
from metalite.tools.clikit import fail_cleanly
from metalite.training.errors import (
    CompressError,
    DataError,
    Interrupted,
    ModelDirError,
    SettingsError,
    StrategyError,
)

TIMEOUT = 300  # seconds per subprocess (TensorFlow's import alone takes ~10 s on 2 busy cores)


def test_every_deliberate_error_is_a_metalite_error_and_a_value_error():
    for cls in (DataError, ModelDirError, CompressError, StrategyError, SettingsError, ExportError):
        assert issubclass(cls, MetaliteError) and issubclass(cls, ValueError), cls
    assert issubclass(Interrupted, MetaliteError) and Interrupted.exit_code == 130


@pytest.mark.parametrize(
    "error, code, text",
    [
        (DataError("x.png: not a readable image"), 1, "Error: x.png: not a readable image"),
        (Interrupted("interrupted at step 4"), 130, "Error: interrupted at step 4"),
        (
            FileNotFoundError(2, "No such file or directory", "/nope"),
            1,
            "Error: /nope: No such file or directory",
        ),
    ],
)
def test_one_decorator_turns_errors_into_one_line(error, code, text):
    @click.command()
    @fail_cleanly
    def cmd():
        raise error

    res = CliRunner().invoke(cmd, [])
    assert res.exit_code == code and res.output.strip() == text


def _run(code: str, env=None):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
    )


def test_a_bad_data_path_fails_before_tensorflow_is_imported(tmp_path):
    code = (
        "import sys\nfrom metalite.tools.cli import main\n"
        f"try:\n    main(['train', '--data', 'omniglot:nope.zip', '--out', {str(tmp_path / 'm')!r}])\n"
        "except SystemExit as e:\n    print('exit', e.code, 'tensorflow' in sys.modules)\n"
    )
    p = _run(code)
    assert p.stdout.strip() == "exit 1 False", p.stdout + p.stderr
    assert p.stderr.strip() == "Error: nope.zip: no such file or directory"
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_tensorflow_is_quiet_unless_verbose():
    code = (
        "from metalite.export.tfcompat import tf, keras\n"
        "tf.config.list_physical_devices()\n"
        "m = keras.Sequential([keras.layers.Dense(2)]); m.build((None, 3))\n"
        "from metalite.export.tflite import convert_float\nconvert_float(m)\nprint('ok')\n"
    )
    quiet = _run(code, {"METALITE_VERBOSE": "", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert quiet.stdout.strip() == "ok" and quiet.stderr == "", quiet.stderr
    loud = _run(code, {"METALITE_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.stdout.strip() == "ok" and len(loud.stderr.splitlines()) >= 3, (
        loud.stderr
    )  # what quiet hid
