# advlens — `make demo` prepares the Fashion-MNIST store and serves the app; `make test` runs the tests.
# Both set everything up on a fresh machine: Debian packages, a virtualenv at .venv with a CPU torch.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STORE ?= stores/fashion-mnist-pgd
DEBIAN_PACKAGES := dataset-fashion-mnist chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test test-all bench clean-store

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch is pinned first so that no CUDA build is pulled in by the package's dependencies.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	@if $(PIP) list 2>/dev/null | grep -qi '^nvidia-'; then echo "error: a CUDA torch was pulled in" >&2; exit 1; fi
	@touch $@

demo: setup
	$(VENV)/bin/advlens prepare --model fashion-resnet --dataset fashion-mnist --split test \
	  --attack pgd --eps 8/255 --alpha 2/255 --steps 7 --out $(STORE)
	$(VENV)/bin/advlens datapaths $(STORE) --pairs top:3
	@echo "The analysis store is at $(STORE) ($(VENV)/bin/advlens info $(STORE)). Opening the app; Ctrl+C stops it."
	$(VENV)/bin/advlens serve $(STORE)

test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/attack_throughput.py

clean-store:
	rm -rf $(STORE)
