"""Helpers every part of metalite shares: the error base, atomic files and cache folders, file locks, SQLite
transactions, the progress protocol.

Standard library only and importing nothing else of metalite, so it installs with the runtime on a device
and sits below every other folder (docs/DESIGN.md, "Layout and layers").
"""
