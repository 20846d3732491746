"""Run the rohrpost CLI from this checkout with the test-only filters in tests/serve/testfilters."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(here)))

import rohrpost.filters  # noqa: E402

rohrpost.filters.__path__.append(os.path.join(here, "testfilters"))

from rohrpost.cli import main  # noqa: E402

main()
