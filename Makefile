# Fracture Lab. `make run` starts the app, `make test` runs the fast tests,
# `make test-all` every test (what CI runs); each creates .venv and installs
# requirements.txt on first use. Tiers: pytest.ini.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slow test-all bench demo-data clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15 -m "not slow and not integration" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15 -m "slow or integration" tests

# Both tiers, the second even when the first fails; fails if either does.
test-all: $(STAMP)
	status=0; $(MAKE) --no-print-directory test || status=1; \
	$(MAKE) --no-print-directory test-slow || status=1; exit $$status

bench: $(STAMP)
	$(PY) -m fracture.bench.data_bench
	$(PY) -m fracture.bench

demo-data: $(STAMP)
	$(PY) -m fracture demo-data --out demo_data

clean-venv:
	rm -rf $(VENV)
