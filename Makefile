# The README's commands. Each one sets everything up first (quickly, when it is already set up).
VENV := .venv
STAMP := $(VENV)/.fastforget-installed

.PHONY: setup demo test bench lint

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastforget demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/python -m pytest bench --benchmark-only --benchmark-json=bench/results.json

lint: $(STAMP)
	$(VENV)/bin/ruff check fastforget kernels tests bench
