"""The ``metalite`` command: one click group; each part registers its own commands.

Command modules import TensorFlow only inside their commands, so ``metalite adapt``/``predict``
start fast and work on a device with no TensorFlow.
"""

from __future__ import annotations

import click

from . import (
    cli_bench,
    cli_compress,
    cli_device,
    cli_export,
    cli_fleet,
    cli_package,
    cli_runtime,
    cli_train,
)
from .clikit import verbose_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metalite")
@verbose_option
def main():
    """metalite: meta-train a few-shot learner, compress it, ship it, teach it new classes on the device.

    \b
    Workstation:  train -> evaluate -> compress -> export -> inspect -> bench
    Device:       adapt (learn classes from a few images) -> predict
    To a device:  package (wheel + bundle + install.sh) -> device install/adapt/predict (no fleet)
    Fleet:        serve + fleet enroll/publish/status (server) <-> sync + device ... (devices)
    Run `metalite COMMAND --help` for each step.
    """


for _module in (
    cli_train,
    cli_compress,
    cli_export,
    cli_runtime,
    cli_bench,
    cli_fleet,
    cli_device,
    cli_package,
):
    _module.register(main)


if __name__ == "__main__":
    main()
