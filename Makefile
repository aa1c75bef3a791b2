# make run [CONFIG=configs/<name>.yaml] [ARGS="--workers 2"] | make test | make lint | make data | make bench | make clean
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/access-logs.yaml
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: venv run test lint data bench clean

# The venv is (re)built only when missing or when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,dask,report]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/pipeline run $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests data configs bench
	$(BIN)/ruff format --check pipeline tests data configs bench

data: $(STAMP)
	$(BIN)/python data/generate.py --scale 50 --out data/generated

# bench/run.py: pipeline vs hand-written baselines (joblib, mpire, dask.bag from the `bench`
# extra; GNU parallel if installed), the dask executor on a local cluster among the
# pipeline's rows. Results in bench/RESULTS.md. Example:
#   make bench BENCH_ARGS="--quick"      # small data, one repeat: smoke test of the harness
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,dask,report,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out data/generated .pytest_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
