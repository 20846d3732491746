"""rohrpost's filters, one module per filter; each module defines ``FILTER``.

Installed as ``rohrpost.filters`` (see pyproject.toml's ``package-dir``).
"""
