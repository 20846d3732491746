"""Fixtures of the end-to-end spam/virus tests (helpers live in tests/e2e_spam/stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fixtures_daemons import DaemonPool


@pytest.fixture(scope="module")
def module_pool(request: pytest.FixtureRequest) -> Iterator[DaemonPool]:
    """A DaemonPool living as long as the test module (one stack shared by its tests)."""
    pool = DaemonPool(request.node)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        pool.close()
