# Two commands do all the set-up on a fresh machine: `make replicate` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROFILE ?= quick

.PHONY: install replicate test unit notebooks lab bench clean

install: $(STAMP)

# Create .venv if missing and install the pinned stack plus this package (editable).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# Run every notebook with papermill (embedded synthetic data by default) into reports/.
replicate: $(STAMP)
	$(PY) -m xtcdr replicate --profile $(PROFILE) --out reports

# Unit tests, then every notebook under nbval (quick profile, outputs to build/, not reports/).
test: $(STAMP) unit notebooks

unit: $(STAMP)
	$(PY) -m pytest tests -q

notebooks: $(STAMP)
	mkdir -p build/nbval-reports
	CI=1 XTCDR_PROFILE=quick XTCDR_OUT=$(CURDIR)/build/nbval-reports \
	  $(PY) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Speed and memory benchmarks (numbers printed and written to reports/benchmarks/).
bench: $(STAMP)
	$(PY) tests/benchmarks/bench_prepare.py
	$(PY) tests/benchmarks/bench_train.py
	$(PY) tests/benchmarks/bench_quick.py

clean:
	rm -rf build data/processed data/checkpoints
