"""Where the tests find the checkout: one home for paths, so a test file's folder does not matter."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/: the kits and the test data
REPO = TESTS.parent  # the checkout: README, models/, scripts/, the product folders
DATA = TESTS / "data"  # committed fixtures (Omniglot drawings, emoji)
