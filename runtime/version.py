"""The metalite release number: ``setup.py`` reads it from here and every bundle records it."""

__version__ = "0.1.0"
