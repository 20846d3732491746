"""Start ``rohrpost`` with tests/milter/testfilters added to ``rohrpost.filters`` (tests only).

Usage: ``python tests/milter/launch.py milter -c FILE --socket ...``. The real filters keep
precedence (the test folder is appended), so ``rules`` is the real one once it exists.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import rohrpost.filters  # noqa: E402

rohrpost.filters.__path__.append(os.path.join(ROOT, "tests", "milter", "testfilters"))

from rohrpost.cli import main  # noqa: E402

main()
