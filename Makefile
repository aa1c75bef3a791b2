# make run [CONFIG=configs/<name>.yaml] [ARGS="--workers 2"] | make test | make lint | make data | make bench | make clean
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/access-logs.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test lint data bench clean

# The venv is (re)built only when missing or when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/pipeline run $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests data configs
	$(BIN)/ruff format --check pipeline tests data configs

data: $(STAMP)
	$(BIN)/python data/generate.py --scale 50 --out data/generated

clean:
	rm -rf $(VENV) out data/generated .pytest_cache .ruff_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
