"""rohrpost: small composable mail filters for milter, pipe and SMTP/LMTP modes.

This package owns the shared machinery (model, pipeline, modes, delivery, state). The filters
live in the top-level ``filters/`` folder and are installed as ``rohrpost.filters`` through
setuptools' ``package-dir`` mapping. When run from a checkout without installation, the checkout
root is appended to this package's ``__path__`` so that ``rohrpost.filters`` still resolves to
``filters/`` (see docs/decisions.md).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

_checkout_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_checkout_root, "filters", "__init__.py")):
    __path__.append(_checkout_root)
