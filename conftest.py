"""Which tests a bare ``python -m pytest`` runs: the fast selection for local work.

Tests marked ``slow`` (more than ~20 s here: training, compression, export of real models, fleet updates,
benchmark reports, browser scenarios) or ``device`` (device_tests/: emulated devices) are deselected, not
skipped, so the summary counts them as "N deselected". ``--all`` runs everything (CI, the README's command);
an explicit ``-m EXPR`` chooses instead of the default.
"""

from __future__ import annotations

DEFAULT_DESELECTED = ("slow", "device")  # markers the fast selection leaves out


def pytest_addoption(parser):
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help=f"run every test, also those marked {' or '.join(DEFAULT_DESELECTED)} "
        "(without it, and without -m, they are deselected)",
    )


def _fast_selection(config) -> bool:
    return not config.getoption("--all") and not config.getoption("markexpr")


def pytest_report_header(config):
    if _fast_selection(config):
        return (
            f"fast selection: tests marked {' or '.join(DEFAULT_DESELECTED)} are deselected "
            "(--all runs everything, as CI does)"
        )
    return None


def pytest_collection_modifyitems(config, items):
    if not _fast_selection(config):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if any(item.get_closest_marker(m) for m in DEFAULT_DESELECTED) else kept).append(
            item
        )
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
