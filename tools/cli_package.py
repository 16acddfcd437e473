"""``metalite package``: the folder a user copies to a device (``device_package``). No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import click

from .clikit import console_progress, fail_cleanly


@click.command("package")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder to write (replaced if it exists); copy it to the device with scp -r.",
)
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Use this metalite wheel instead of building one from the source tree (needed when metalite "
    "itself was installed from a wheel).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@fail_cleanly
def package_cmd(bundle, out, wheel, quiet):
    """Write OUT: the metalite wheel, BUNDLE, install.sh and SHA256SUMS, for a device without a package index.

    \b
    On the device (Debian's python3; docs/install.md):
      sudo apt install -y python3-venv python3-numpy python3-pil
      sh OUT/install.sh        # checks SHA256SUMS, venv ~/metalite, pip, device home ~/metalite-home
    The wheel is pure Python: the same folder serves x86-64 and aarch64 devices; install.sh picks the
    interpreter extra (ai-edge-litert, or tflite-runtime where it has no wheel).
    """
    from .device_package import package

    package(bundle, out, wheel=wheel, progress=console_progress(quiet))
    click.echo(f"{out}: ready; copy it to the device and run: sh {out.name}/install.sh")


def register(group: click.Group) -> None:
    """Add ``package`` to ``group``."""
    group.add_command(package_cmd)
