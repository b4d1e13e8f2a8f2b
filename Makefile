# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA := data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv clean superuser shell manage not-running port-free lock bench

# uv installs the same pins in seconds where it is on the machine; pip otherwise.
INSTALL = if command -v uv >/dev/null 2>&1; then uv pip install --quiet --python $(BIN)/python -r $(1); else $(BIN)/pip install --quiet --disable-pip-version-check -r $(1); fi

# What running needs (make run); the test tools come with make test.
$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.12 ...)")'
	$(PYTHON) -m venv $(VENV)
	$(call INSTALL,requirements.txt)
	touch $@

$(BIN)/.dev-installed: requirements-dev.txt $(BIN)/.installed
	$(call INSTALL,requirements-dev.txt)
	touch $@

# The command-line client, runnable from anywhere: .venv/bin/batches (`batches --help`).
$(BIN)/batches: $(BIN)/.installed
	@printf '#!/bin/sh\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s/python" -m client "$$@"\n' "$(CURDIR)" "$(abspath $(BIN))" > $@
	@chmod +x $@

venv: $(BIN)/.installed $(BIN)/batches

$(DATA)/secret_key:
	@mkdir -p $(DATA)
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	@chmod 600 $@

# Migrate a SQLite database in data/, load the demo catalog, print a token and a curl
# line, then run a job worker and the gunicorn server together in the foreground.
# Ctrl-C (or SIGTERM) stops both: the worker requeues what it was running.
run: venv $(DATA)/secret_key not-running port-free
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py migrate --no-input -v 0
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py sync_catalog catalog/demo.yaml
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py demo_setup --url http://$(HOST):$(PORT) --token-file $(DATA)/demo_token --env-file $(DATA)/env
	@export SECRET_KEY_FILE=$(DATA)/secret_key; \
	exec 9>$(DATA)/run.lock; flock -n 9 || { echo "another make run started in this folder meanwhile" >&2; exit 1; }; \
	$(BIN)/python manage.py runworker & worker=$$!; \
	HOST=$(HOST) PORT=$(PORT) LOG_REQUESTS=$${LOG_REQUESTS:-changes} $(BIN)/gunicorn -c batchsite/gunicorn.conf.py batchsite.wsgi & server=$$!; \
	trap 'kill -TERM $$worker $$server 2>/dev/null' INT TERM; \
	while kill -0 $$worker 2>/dev/null && kill -0 $$server 2>/dev/null; do sleep 1; done; \
	kill -TERM $$worker $$server 2>/dev/null; wait $$worker; wait $$server

# Refuse to start a second server and worker on this folder's database (each would offer
# every cpu of the machine): the running one holds data/run.lock, with its server and
# worker, until both have stopped.
not-running:
	@mkdir -p $(DATA)
	@flock -n $(DATA)/run.lock true || { \
	  echo "make run is already running in this folder ($$(sed -n 's/^BATCHES_URL=//p' $(DATA)/env 2>/dev/null || echo 'its server')), on the same database: stop it (Ctrl-C there) first, or use another clone" >&2; \
	  exit 1; }

# Refuse to start (non-zero) when something already listens on HOST:PORT.
port-free:
	@$(PYTHON) -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
	sys.exit(0) if s.connect_ex(("$(HOST)", $(PORT))) else sys.exit("$(HOST):$(PORT) is taken by another program: stop it, or run make run PORT=8001")'

# The operators' commands with the project's environment (virtualenv, data/ secret key).
superuser: venv $(DATA)/secret_key
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py createsuperuser

shell: venv $(DATA)/secret_key
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py shell

# make manage ARGS="issue_token alice --create-user"
# Silent (@): what the command prints is all that is printed, so TOKEN=$$(make -s manage ...) works.
manage: venv $(DATA)/secret_key
	@SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py $(ARGS)

lint: venv $(BIN)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	SECRET_KEY=lint-only $(BIN)/python manage.py makemigrations --check --dry-run

# The whole suite. SQLite unless DATABASE_URL points elsewhere (CI runs both).
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache

# requirements*.txt from requirements*.in: every dependency pinned, with the hashes of
# every file of its release (pip then refuses anything else). Keeps the versions
# already pinned; `make lock UPGRADE=--upgrade` moves to the newest.
lock: $(BIN)/.dev-installed
	$(BIN)/uv pip compile requirements.in --generate-hashes --python-version 3.11 --quiet $(UPGRADE) -o requirements.txt
	$(BIN)/uv pip compile requirements-dev.in --generate-hashes --python-version 3.11 --quiet $(UPGRADE) -o requirements-dev.txt

# Every benchmark in sequence, at modest sizes (about 10-15 minutes on 2 cores), on
# PostgreSQL: DATABASE_URL, else postgres://postgres@127.0.0.1:5432/batches_bench, which
# each bench empties. Run as root (sealed jobs; BATCHES_JOB_USER, default batches-job);
# slurm_vs_sbatch needs a cluster. Each script takes a size for the 100,000-job case
# (bench/RESULTS.md has the commands and the figures).
BENCHES = bench_submit submit_to_running api_at_scale admin_at_scale executor_vs_raw fairshare sandbox_cost sealed_vs_bwrap slurm_vs_sbatch mixed_load events
bench: venv
	@set -e; for b in $(BENCHES); do \
		echo; echo "### bench/$$b.py ($$(date -u +%FT%TZ))"; start=$$(date +%s); \
		$(BIN)/python bench/$$b.py; echo "### bench/$$b.py took $$(( $$(date +%s) - start )) s"; \
	done
