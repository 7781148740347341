# Two commands for a new user: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run test clean

install: $(STAMP)

# torch first, from the pinned version (the CPU wheel on disk here); constraints.txt pins the rest,
# so installing the package never replaces torch.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# two study workers, each on one of the 2 cores: the demo in 4 min 42 s here (README)
DEMO_WORKERS ?= 2

run: $(STAMP)
	$(BIN)/ablate run losses --workers $(DEMO_WORKERS)

# two test processes, one per core, each test file in one of them (module fixtures run once;
# tests/conftest.py divides the cores' threads among them): 14 min -> under 10 min here (README)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) .ablate reports
