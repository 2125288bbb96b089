# nudge: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CUSTOMERS ?= 100000
# Days of history the generator writes (sessions per ~30 days): DAYS=270 at 1M customers is ~54M events.
DAYS ?= 30
# make bench: each bench appends its headline figures here; the last step prints them as one table.
BENCH_SUMMARY := .nudge/bench-summary.jsonl
DEV_PORT ?= 3000
# Two workers, each taking whole test files (a file's module fixtures are built once), the
# slowest files first (tests/conftest.py SLOW_FILES_FIRST) so both finish together.
TEST_WORKERS ?= 2
# Where `make test` keeps its temporary files: memory (/dev/shm) when the machine has it.
TEST_TMP ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo $${TMPDIR:-/tmp})
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: setup demo run test test-week-postgres lint bench bench-push bench-serve bench-webhooks dev validate clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "nudge needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

demo: setup  ## generate a demo warehouse and simulate three days of ticks into the local outbox
	$(BIN)/nudge demo

run: setup  ## one tick now, on NUDGE_WAREHOUSE
	$(BIN)/nudge run

test: setup  ## the whole test suite (dbt unit tests, provider emulators included)
	@# The tests' files (DuckDB warehouses, Dagster homes) go to a fresh folder in memory
	@# where there is one: every tick commits hundreds of times to SQLite and DuckDB, and
	@# waiting for the disk to sync each commit cost about a fifth of a tick. Removed after.
	@# Compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI images often set it),
	@# each of the hundreds of `nudge` processes the tests start would compile the package
	@# again (0.3-0.9 s each, measured). Python still reads what is compiled.
	@# --durations lists the 25 slowest tests: where the suite's time goes, in every CI log.
	@$(BIN)/python -m compileall -q dagster_project tests
	@tmp=$$(mktemp -d "$(TEST_TMP)/nudge-tests.XXXXXX") && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 \
		--basetemp "$$tmp/pytest" $(PYTEST_ARGS)

test-week-postgres: setup  ## the simulated week on PostgreSQL (kept out of `make test` for time; CI runs it)
	@tmp=$$(mktemp -d "$(TEST_TMP)/nudge-tests.XXXXXX") && trap 'rm -rf "$$tmp"' EXIT && \
	NUDGE_TEST_POSTGRES_WEEK=1 $(BIN)/python -m pytest tests/test_sequence_week.py -k postgres \
		--basetemp "$$tmp/pytest" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check dagster_project tests
	$(BIN)/ruff format --check dagster_project tests
	$(BIN)/mypy dagster_project
	@# The dbt templater compiles the project, which opens the profile's DuckDB file.
	mkdir -p .nudge
	NUDGE_WAREHOUSE=$(CURDIR)/.nudge/lint.duckdb $(BIN)/sqlfluff lint models
	cd sql && ../$(BIN)/sqlfluff lint .

validate: setup  ## Dagster loads the code location: assets, checks, job and hourly schedule
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs

bench: setup  ## the generator's memory, the tick's stages at CUSTOMERS customers and DAYS of history, transactional latency, the push against drt; then one table
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	mkdir -p .nudge && rm -f $(BENCH_SUMMARY)
	$(BIN)/python -m tests.bench.bench_generate --customers $(CUSTOMERS) --days 30 --times 4 --summary $(BENCH_SUMMARY)
	$(BIN)/python -m tests.bench.bench_tick --customers $(CUSTOMERS) --days $(DAYS) --summary $(BENCH_SUMMARY)
	$(BIN)/python -m tests.bench.bench_transactional --customers $(CUSTOMERS) --summary $(BENCH_SUMMARY)
	$(BIN)/python -m tests.bench.bench_push --summary $(BENCH_SUMMARY)
	$(BIN)/python -m tests.bench.summary $(BENCH_SUMMARY)

bench-push: setup  ## 5,000 sends through each provider lane and through drt, to one local sink (messages/s)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m tests.bench.bench_push

bench-serve: setup  ## nudge serve under 10,000 one-click POSTs while ticks run (req/s, p99)
	$(BIN)/python -m tests.bench.bench_serve

bench-webhooks: setup  ## 100,000 signed SendGrid events in batches of 500 while ticks run (events/s, p99)
	$(BIN)/python -m tests.bench.bench_webhooks
	@# Paced over 150 s, so ticks drain while batches arrive: exactly once, still.
	$(BIN)/python -m tests.bench.bench_webhooks --spread 150

dev: setup  ## the Dagster UI on http://127.0.0.1:3000, with the runs of `nudge run` and the demo
	$(BIN)/nudge dev --port $(DEV_PORT)

clean:
	rm -rf .nudge dbt/target dbt/logs
