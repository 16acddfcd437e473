"""The ``metalite`` command: one click group; each part registers its own commands.

Command modules import TensorFlow only inside their commands, so ``metalite adapt``/``predict``
start fast and work on a device with no TensorFlow.
"""
from __future__ import annotations

import importlib

import click

RESERVED = ("train", "evaluate", "compress", "export", "inspect", "adapt", "predict", "bench")
MODULES = ("cli_train", "cli_compress", "cli_export", "cli_runtime", "cli_bench")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metalite")
def main():
    """metalite: meta-train a few-shot learner, compress it, ship it, teach it new classes on the device.

    \b
    Workstation:  train -> evaluate -> compress -> export -> inspect -> bench
    Device:       adapt (learn classes from a few images) -> predict
    Run `metalite COMMAND --help` for each step.
    """


def _placeholder(name):
    @main.command(name, help="(not available yet)",
                  context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def _cmd():
        raise click.ClickException(f"'metalite {name}' is not available yet in this version")



for _mod in MODULES:
    try:
        module = importlib.import_module(f"metalite.tools.{_mod}")
    except ModuleNotFoundError as e:
        if e.name != f"metalite.tools.{_mod}":
            raise
        continue
    module.register(main)

for _name in RESERVED:
    if _name not in main.commands:
        _placeholder(_name)


if __name__ == "__main__":
    main()
