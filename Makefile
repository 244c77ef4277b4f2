# Fracture Lab. `make run` starts the app, `make test` runs the tests; both
# create .venv and install requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench demo-data clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

bench: $(STAMP)
	$(PY) -m fracture.bench.data_bench
	$(PY) -m fracture.bench

demo-data: $(STAMP)
	$(PY) -m fracture demo-data --out demo_data

clean-venv:
	rm -rf $(VENV)
