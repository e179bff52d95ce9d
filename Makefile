# The two commands a user needs (see README): `make demo` and `make test`.
# Both create .venv and install everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench-render clean

$(STAMP): setup.cfg pyproject.toml scripts/install.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlcyclegan pipeline --preset quick --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check rlcyclegan envs agents experiments tests

bench-render: $(STAMP)
	$(PY) experiments/bench_render.py

clean:
	rm -rf $(VENV) build *.egg-info
