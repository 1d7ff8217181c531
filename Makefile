# Everyday commands. `make run` and `make test` set everything up themselves (venv, packages, data).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PYTEST_ARGS ?=

.PHONY: setup data browser run test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,all]'
	touch $(STAMP)

# Fashion-MNIST: Debian's package where apt is available (this project's machines, offline);
# elsewhere maskcl downloads it on first use into ~/.cache/maskcl.
data:
	@if [ ! -e $(FMNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
		|| echo "apt-get could not install dataset-fashion-mnist; maskcl will download Fashion-MNIST"; \
	fi

# Chromium renders the HTML report in tests (tests/test_report.py); Debian's package, as root.
browser:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
		|| echo "apt-get could not install chromium; the browser test needs it"; \
	fi

run: setup data
	$(VENV)/bin/maskcl run

test: setup data browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup data
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/accuracy.py all --seeds 0,1,2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
