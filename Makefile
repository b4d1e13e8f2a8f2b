# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA := data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint venv clean

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.12 ...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

venv: $(BIN)/.installed

$(DATA)/secret_key:
	@mkdir -p $(DATA)
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	@chmod 600 $@

# Migrate a SQLite database in data/, load the demo catalog, print a token and a curl
# line, then run a job worker and the gunicorn server together in the foreground.
# Ctrl-C (or SIGTERM) stops both: the worker requeues what it was running.
run: venv $(DATA)/secret_key
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py migrate --no-input -v 0
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py createcachetable
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py sync_catalog catalog/demo.yaml
	SECRET_KEY_FILE=$(DATA)/secret_key $(BIN)/python manage.py demo_setup --url http://$(HOST):$(PORT)
	@export SECRET_KEY_FILE=$(DATA)/secret_key; \
	$(BIN)/python manage.py runworker & worker=$$!; \
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c batchsite/gunicorn.conf.py batchsite.wsgi & server=$$!; \
	trap 'kill -TERM $$worker $$server 2>/dev/null' INT TERM; \
	while kill -0 $$worker 2>/dev/null && kill -0 $$server 2>/dev/null; do sleep 1; done; \
	kill -TERM $$worker $$server 2>/dev/null; wait $$worker; wait $$server; true

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=lint-only $(BIN)/python manage.py makemigrations --check --dry-run

# The whole suite. SQLite unless DATABASE_URL points elsewhere (CI runs both).
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .ruff_cache
