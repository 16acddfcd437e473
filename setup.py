"""metalite: on-device few-shot learning kit (train -> compress -> export -> adapt on device)."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "runtime" / "version.py").read_text()
).group(1)

setup(
    name="metalite",
    version=VERSION,
    description="Meta-train, compress and ship few-shot learners to Raspberry Pi and Coral Edge TPU",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # One import namespace: the top-level folders install as metalite.<folder>, so nothing generic
    # ("runtime", "tools") lands in a user's site-packages. ``metalite`` itself is a namespace package
    # with no folder of its own, so nothing in the repository root shadows the installed one
    # (DESIGN.md, "Layout").
    packages=[
        "metalite.common",
        "metalite.training",
        "metalite.export",
        "metalite.runtime",
        "metalite.runtime.sync",
        "metalite.tools",
        "metalite.fleet",
        "metalite.pipelines",
        "metalite.runtime.webui",
        "metalite.bench",
    ],
    package_dir={
        "metalite.common": "common",
        "metalite.training": "training",
        "metalite.export": "export",
        "metalite.runtime": "runtime",
        "metalite.tools": "tools",
        "metalite.fleet": "fleet",
        "metalite.pipelines": "pipelines",
        "metalite.bench": "bench",
    },
    # the device page, and the install script `metalite package` puts beside the wheel
    package_data={"metalite.runtime.webui": ["page.html"], "metalite.tools": ["device_install.sh"]},
    install_requires=["numpy>=1.21", "click>=7"],
    extras_require={
        "train": [
            "tensorflow-cpu==2.21.0",
            "tf-keras==2.21.0",
            "tensorflow-model-optimization==0.8.1",
            "pillow",
            "matplotlib",
        ],
        "images": ["pillow"],
        "digits": ["scikit-learn"],  # --data digits: a cross-domain check that needs no download
        "litert": ["ai-edge-litert"],
        "tflite": ["tflite-runtime", "numpy<2"],
        "serve": ["fastapi>=0.100", "uvicorn>=0.23", "cryptography>=3.4"],
        "sync": ["cryptography>=3.4"],
        "dev": [
            "pytest",
            "pytest-timeout",
            "ai-edge-litert",
            "fastapi>=0.100",
            "uvicorn>=0.23",
            "cryptography>=3.4",
            "hypothesis",
            "scikit-learn",
            "ruff",
            "playwright",
        ],  # playwright drives Debian's chromium in tests/scenarios/test_device_page.py
    },
    entry_points={"console_scripts": ["metalite=metalite.tools.cli:main"]},
)
