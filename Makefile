# make demo: sets up and runs the local mesh walkthrough.  make test: sets up and runs every check.
# make demo-federation: the same with two federated datacenters (dc1, dc2; root).
# make bench: runs every benchmark briefly and prints one table (measure, goal, figure, met?).
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup test demo demo-federation lint unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy --strict src
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

unit: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

# Every bench in bench/ with short settings (a few minutes), then one table; not part of test.
bench: setup
	$(VENV)/bin/python bench/run_all.py

demo: setup
	$(VENV)/bin/loom demo

demo-federation: setup
	$(VENV)/bin/loom demo --datacenters 2

clean:
	rm -rf $(VENV) build src/*.egg-info
