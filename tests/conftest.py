"""Shared test configuration: only plugin registrations; fixtures live in tests/support."""

pytest_plugins = ["tests.support.fixtures_dns", "tests.support.fixtures_daemons"]
