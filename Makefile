# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

# Tests and the demo never reach the network: hub weights and W&B stay offline.
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0

.PHONY: test demo install clean fashion-mnist

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,real]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The demo's target data: Debian's dataset-fashion-mnist (the original IDX files), installed where this machine
# allows (root and apt-get); otherwise the demo says so in one line and runs on MNIST-5k. `make test` never needs it.
FASHION := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
fashion-mnist:
	@test -f $(FASHION) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; } ; } || \
	  echo "make: could not install dataset-fashion-mnist (needs root and apt-get); the demo runs on MNIST-5k"

demo: $(STAMP) fashion-mnist
	$(PY) -m lit_transfer.demo

clean:
	rm -rf runs demo_runs .pytest_cache
