VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quix Streams pins older confluent-kafka and pydantic than the project: a venv of its own.
QUIX_VENV ?= .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

.PHONY: install run test lint typecheck unit bench bench-quix clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/audience-manager serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy audience_manager

unit: $(STAMP)
	$(PY) -m pytest -W error -q

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/engine.py

$(QUIX_STAMP): bench/requirements-quix.txt
	python3 -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet -r bench/requirements-quix.txt
	touch $(QUIX_STAMP)

bench-quix: $(STAMP) $(QUIX_STAMP)
	$(PY) bench/kafka_processor.py --quix-python $(QUIX_VENV)/bin/python

clean:
	rm -rf $(VENV) $(QUIX_VENV) .mypy_cache .pytest_cache .ruff_cache
