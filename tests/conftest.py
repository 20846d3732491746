pytest_plugins = ["tests.support.fixtures_daemons"]
