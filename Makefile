# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from
# pinned dependencies the first time (a few minutes) and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test mutants repro report serve stop clean-outputs install system-deps

install: $(INSTALLED)

# Re-install only when the declared or locked dependencies change.
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable ".[test]"
	touch $@

run: $(INSTALLED)
	$(BIN)/edgeflow run

test: $(INSTALLED) system-deps
	$(BIN)/python -m pytest

# The SSH device-farm tests start real OpenSSH servers on loopback: install Debian's
# openssh-server when it is missing and we are root (otherwise those tests are skipped).
system-deps:
	@if [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "openssh-server missing and not root: SSH farm tests will be skipped"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q openssh-server >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server >/dev/null; } || \
	  echo "could not install openssh-server: SSH farm tests will be skipped"

# Mutation testing of the modules users depend on most ([tool.mutmut] in pyproject.toml):
# killed / survived / timed out per module. Not in CI: tens of minutes on two cores.
mutants: $(INSTALLED) system-deps
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable ".[test,mutation]"
	$(BIN)/python benchmarks/mutants.py

# The same lifecycle through DVC: one stage per step, `edgeflow step NAME` each.
repro: $(INSTALLED)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

report: $(INSTALLED)
	$(BIN)/edgeflow report

# A local Prefect server (127.0.0.1:4200), the work pool, prefect.yaml's deployments and
# a worker, in the background; pids and logs in .edgeflow/serve/ (flows/serve.py).
serve: $(INSTALLED)
	$(BIN)/edgeflow serve

# Stops what `make serve` started, by its recorded pids.
stop: $(INSTALLED)
	$(BIN)/edgeflow stop

# Removes produced files (data, models, results, reports, caches), never the MLflow store.
clean-outputs:
	rm -rf data models results reports metrics .edgeflow
