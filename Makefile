# Two commands do all the set-up on a fresh machine:
#   make run    create/reuse .venv, install, generate the demo set, serve http://localhost:8501
#   make test   create/reuse .venv, install (with test extras and Chromium), run the test suite (2 workers, then the timed tests)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint browser

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# The team's shared ImageNet weights, when the shared folder sits beside the checkout (README: Pretrained weights)
SHARED_WEIGHTS := $(abspath $(wildcard ../shared/data/imagenet-weights))

run: $(STAMP)
	$(BIN)/python -m core scan demo > /dev/null
	MEDIMAGE_WEIGHTS_DIR="$${MEDIMAGE_WEIGHTS_DIR:-$(SHARED_WEIGHTS)}" $(BIN)/streamlit run app.py

browser:
	@scripts/ensure_chromium.sh

# Two workers, each taking whole test files (a module's trained fixture is built once); the suite kept one of the 2
# cores idle about half the time (jobs start, servers wait, pages poll). Tests that time the product itself
# (marked timed) run afterwards, alone, so a neighbour's training cannot make them miss their limit.
TEST_WORKERS ?= 2

test: $(STAMP) browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not timed"
	$(BIN)/python -m pytest -m timed

bench: $(STAMP)
	$(BIN)/python bench/scan_bench.py

lint: $(STAMP)
	$(BIN)/ruff check .
