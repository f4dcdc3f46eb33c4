# Everything runs from a virtual environment inside the repository.
# `make demo` and `make test` create it on first use (python3 -m venv + pip).
VENV   ?= .venv
PYTHON ?= python3
# CPU build by default; on a GPU machine: make TORCH=torch EXTRAS=fast,test,cohere,gpu
TORCH  ?= torch==2.13.0
EXTRAS ?= fast,test,cohere
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q "$(TORCH)"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p results
	$(VENV)/bin/cdi run configs/demo.yaml --out results/demo.cxi --overwrite
	$(VENV)/bin/cdi report results/demo.cxi --png results/demo.png --html results/demo.html --overwrite
	@echo
	@echo "Look at it:"
	@echo "  python3 -m webbrowser results/demo.html    # the crystal in 3-D (any browser, offline)"
	@echo "  xdg-open results/demo.png                  # central slices and the chi2 history"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_iteration.py

clean:
	rm -rf $(VENV) results build *.egg-info
