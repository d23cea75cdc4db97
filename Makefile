# make demo: sets up and runs the local mesh walkthrough.  make test: sets up and runs every check.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint unit clean

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

demo: setup
	$(VENV)/bin/loom demo

clean:
	rm -rf $(VENV) build src/*.egg-info
