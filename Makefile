# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from
# pinned dependencies the first time (a few minutes) and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test repro report clean-outputs install

install: $(INSTALLED)

# Re-install only when the declared or locked dependencies change.
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable ".[test]"
	touch $@

run: $(INSTALLED)
	$(BIN)/edgeflow run

test: $(INSTALLED)
	$(BIN)/python -m pytest

# The same lifecycle through DVC: one stage per step, `edgeflow step NAME` each.
repro: $(INSTALLED)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

report: $(INSTALLED)
	$(BIN)/edgeflow report

# Removes produced files (data, models, results, reports, caches), never the MLflow store.
clean-outputs:
	rm -rf data models results reports metrics .edgeflow
