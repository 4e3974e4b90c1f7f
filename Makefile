# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from
# pinned dependencies the first time (a few minutes) and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test test-arm mutants repro report mlflow mlflow-server serve stop clean-outputs install system-deps

install: $(INSTALLED)

# Re-install only when the declared or locked dependencies change.
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# -qq: errors only. A machine whose pip configuration names package indexes that
	@# lack some packages gets one warning per package otherwise (hundreds of lines).
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq --constraint requirements.lock --editable ".[test]"
	@# Byte-compiled now: where PYTHONDONTWRITEBYTECODE is set (CI images), every command
	@# would otherwise compile the project's modules again (an edited one still is).
	$(BIN)/python -m compileall -q flows tasks >/dev/null
	touch $@

run: $(INSTALLED)
	$(BIN)/edgeflow run

# Three workers on 2 cores, one test file each at a time (module fixtures stay in one
# process): the suite waits on servers, boards and subprocesses as much as it computes, so
# a third worker fills those waits (with two the suite took 10 min 40 s on a clean clone
# of 2026-12-06's main here). A crashed worker is not
# replaced: with --dist loadfile, pytest-xdist 3.8 can then wait forever for work that
# never comes (pytest-xdist#784, #1378), so the run stops and reports the crash instead.
# The emulated ARM boards' and the Cortex-M4 firmware's tests (marked arm: about 5
# minutes; the first time on a machine 3 more for the boards' root filesystem and 6 more
# for TFLite Micro's library) run apart, in `make test-arm`, which CI runs after `make
# test`, so that the suite stays under 10 minutes on 2 cores.
PYTEST := $(BIN)/python -m pytest -n 3 --dist loadfile --max-worker-restart 0

test: $(INSTALLED) system-deps
	$(PYTEST) -m "not arm"

test-arm: $(INSTALLED) system-deps
	$(PYTEST) -m arm

# The SSH device-farm tests start real OpenSSH servers on loopback, the report test
# opens report.html in a real headless browser, the microcontroller bundle is compiled
# for a Cortex-M4 and built into a TFLite Micro firmware that qemu-system-arm runs (with
# newlib and its libstdc++ for bare metal), and the emulated ARM boards
# (tests/arm_boards.py) are an arm64 Debian built by mmdebstrap and run by qemu-user
# through binfmt_misc: install Debian's openssh-server, chromium, gcc-arm-none-eabi,
# libnewlib-arm-none-eabi, libstdc++-arm-none-eabi-newlib, qemu-system-arm,
# qemu-user-static, binfmt-support and mmdebstrap when they are missing and we are root
# (otherwise those checks are skipped). The team tracking server's test starts a real
# PostgreSQL (Debian's postgresql: initdb and pg_ctl).
system-deps:
	@missing=""; \
	{ [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; } || missing="openssh-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v arm-none-eabi-g++ >/dev/null 2>&1 || \
	  missing="$$missing gcc-arm-none-eabi libstdc++-arm-none-eabi-dev"; \
	[ -f /usr/lib/arm-none-eabi/newlib/nano.specs ] || missing="$$missing libnewlib-arm-none-eabi"; \
	[ -f /usr/lib/arm-none-eabi/newlib/thumb/v7e-m+fp/hard/libstdc++_nano.a ] || \
	  missing="$$missing libstdc++-arm-none-eabi-newlib"; \
	command -v qemu-system-arm >/dev/null 2>&1 || missing="$$missing qemu-system-arm"; \
	[ -x /usr/bin/qemu-aarch64-static ] || missing="$$missing qemu-user-static"; \
	command -v update-binfmts >/dev/null 2>&1 || missing="$$missing binfmt-support"; \
	command -v mmdebstrap >/dev/null 2>&1 || missing="$$missing mmdebstrap"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "missing and not root: $$missing (their tests will be skipped)"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $$missing >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null; } || \
	  echo "could not install $$missing: their tests will be skipped"

# Mutation testing of every function of tasks/ and flows/ but plot styling
# (benchmarks/mutants.py; [tool.mutmut] in pyproject.toml): killed / survived / hung per
# concern. Not in CI. The whole scope is about a day of two cores, so by default a seeded
# 3% sample (about 700 mutants, with a 95% interval on each score); a later run goes on
# where the last stopped. `make mutants MUTANTS_SAMPLE=1` tests them all, and
# MUTANTS_MINUTES=60 stops after an hour.
MUTANTS_SAMPLE ?= 0.03
MUTANTS_MINUTES ?=
mutants: $(INSTALLED) system-deps
	$(BIN)/python -m pip install -qq --constraint requirements.lock --editable ".[test,mutation]"
	$(BIN)/python benchmarks/mutants.py --sample $(MUTANTS_SAMPLE) \
	  $(if $(MUTANTS_MINUTES),--minutes $(MUTANTS_MINUTES))

# The same lifecycle through DVC: one stage per step, `edgeflow step NAME` each.
repro: $(INSTALLED)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

report: $(INSTALLED)
	$(BIN)/edgeflow report

# MLflow's UI and API over the embedded store (mlflow/mlflow.db + mlflow/artifacts), on
# this machine only: http://$(MLFLOW_HOST):$(MLFLOW_PORT). Runs log to it with
# MLFLOW_TRACKING_URI=http://$(MLFLOW_HOST):$(MLFLOW_PORT). Artifacts stay plain files
# (new experiments too, not proxied `mlflow-artifacts:` URIs): `edgeflow run` without the
# server keeps reading and writing the same store.
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_DIR ?= mlflow
mlflow: $(INSTALLED)
	mkdir -p $(MLFLOW_DIR)/artifacts
	$(BIN)/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(abspath $(MLFLOW_DIR))/mlflow.db \
	  --default-artifact-root file://$(abspath $(MLFLOW_DIR))/artifacts --no-serve-artifacts

# A team's tracking server (README: "For a team"): runs, logged models and the model
# registry in PostgreSQL (MLFLOW_DATABASE: a database of Debian's postgresql; a password
# goes in ~/.pgpass or PGPASSWORD, never in this URI, which `ps` shows), artifacts proxied
# by the server (clients need no access to where they lie) into MLFLOW_ARTIFACTS: a folder
# here, or s3://bucket/path (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and
# MLFLOW_S3_ENDPOINT_URL for an S3-compatible store). It listens on every interface;
# MLflow answers only Host headers of localhost and private IPs unless
# MLFLOW_ALLOWED_HOSTS names the server's name (team-server,team-server:5000).
MLFLOW_DATABASE ?= postgresql://mlflow@localhost/mlflow
MLFLOW_ARTIFACTS ?= $(abspath $(MLFLOW_DIR))/server-artifacts
MLFLOW_SERVER_HOST ?= 0.0.0.0
MLFLOW_ALLOWED_HOSTS ?=
mlflow-server: $(INSTALLED)
	$(BIN)/mlflow server --host $(MLFLOW_SERVER_HOST) --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri '$(MLFLOW_DATABASE)' --serve-artifacts \
	  --artifacts-destination '$(MLFLOW_ARTIFACTS)' \
	  $(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts '$(MLFLOW_ALLOWED_HOSTS)')

# A local Prefect server (127.0.0.1:4200), the work pool, prefect.yaml's deployments and
# a worker, in the background; pids and logs in .edgeflow/serve/ (flows/serve.py).
serve: $(INSTALLED)
	$(BIN)/edgeflow serve

# Stops what `make serve` started, by its recorded pids.
stop: $(INSTALLED)
	$(BIN)/edgeflow stop

# Removes produced files (data, models, results, reports, caches), never the MLflow store.
clean-outputs:
	rm -rf data models results reports metrics code-manifests .edgeflow
