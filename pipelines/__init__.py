"""Pipelines: work that composes the layers below it (training, export, fleet, runtime) into one job.

``fleet_update`` turns what a fleet's devices sent into a better bundle, or says why not;
``fleet_schedule`` runs it every few hours for ``metalite serve``. The CLI (``metalite.tools``) sits on top
and calls them; nothing below imports this package (docs/DESIGN.md, "Layout and layers").
"""
