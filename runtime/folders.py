"""A folder of class folders, ``ROOT/<class>/<image>``: the layout of ``metalite adapt``'s support images,
``folder:`` training data and a fleet update's data, read in one place.

Image files are those with an extension of ``images.IMAGE_EXTENSIONS`` (any case); hidden entries (a name
starting with ".") are skipped, folders and files alike. Nothing is decoded here.
"""

from __future__ import annotations

from pathlib import Path

from .images import IMAGE_EXTENSIONS


def is_image_file(path: Path) -> bool:
    """A visible regular file whose extension says it is an image."""
    path = Path(path)
    return (
        not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )


def class_folders(root) -> list:
    """[(class name, [image files, sorted])] of the visible folders of ``root``, sorted by name; a class folder
    with no image has an empty list (the caller says what that means)."""
    root = Path(root)
    return [
        (d.name, sorted(f for f in d.iterdir() if is_image_file(f)))
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ]
