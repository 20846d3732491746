# rohrpost: the two commands a newcomer needs are `make run` and `make test`.
#
#   make run     the default pipeline.toml as an SMTP receiver on 127.0.0.1:10025, delivering
#                into ./var/Maildir (no external daemon needed)
#   make test    every test (installs the Debian packages and Python dependencies it needs)
#   make lint    ruff + mypy --strict          make bench   benchmarks (see docs/performance.md)

VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test deps deps-run lint typecheck unit integration bench clean

# compileall: this environment may set PYTHONDONTWRITEBYTECODE, and a checkout without .pyc files
# compiles ~30 modules at every `rohrpost run` (docs/performance.md)
deps-run:
	@scripts/install-deps.sh --minimal
	@$(PY) -m compileall -q rohrpost filters >/dev/null

deps:
	@scripts/install-deps.sh
	@$(PY) -m compileall -q rohrpost filters >/dev/null

run: deps-run
	@mkdir -p var
	@echo "rohrpost: SMTP receiver on 127.0.0.1:10025 -> maildir:var/Maildir (Ctrl-C stops)"
	@echo "try:  swaks --server 127.0.0.1:10025 --to bob@example.net --from alice@example.org"
	$(PY) bin/rohrpost serve -c pipeline.toml

lint: deps
	$(VENV)/bin/ruff check rohrpost filters bin tests bench
	$(VENV)/bin/mypy --strict rohrpost filters bench

typecheck: lint

test: deps
	$(VENV)/bin/ruff check rohrpost filters bin tests bench
	$(VENV)/bin/mypy --strict rohrpost filters bench
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

integration: deps
	$(PY) -m pytest -q -m integration $(PYTEST_ARGS)

# installs the reference filters too (scripts/install-deps.sh --bench); needs root; prints the
# table and writes bench/results/DATE.md. QUICK=1: fewer messages and runs; BENCH_ARGS: more
# options (python -m bench --help), e.g. BENCH_ARGS="--only sign,verify --no-pipe".
bench: deps
	@scripts/install-deps.sh --bench --no-venv
	$(PY) -m bench $(if $(QUICK),--quick,) $(BENCH_ARGS)

clean:
	rm -rf var build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
