# Everyday commands; CI (.ci/run) uses the same ones.
# `make install` creates the virtualenv $(VENV) (default .venv in this folder) with the system python3,
# installs every Python dependency at the exact version in requirements.lock, then fsnet itself
# (editable). The venv's python is what every other target runs.
VENV ?= .venv
SYSTEM_PYTHON ?= python3
PYTHON := $(VENV)/bin/python
UV_VERSION := 0.13.9
LOCK := requirements.lock
# What the lock is made from: pyproject.toml's Python version and dependency lists (other edits of
# pyproject.toml, e.g. scripts or tool settings, need no new lock).
LOCK_SOURCE_HASH = $$(sed -n '/^requires-python/p; /^dependencies = \[/,/^\]/p; /^\[project.optional-dependencies\]/,/^\[/p' pyproject.toml | sha256sum | cut -d' ' -f1)

.PHONY: install system-deps venv lock-fresh check-install lock lock-upgrade test test-slow lint format bench demo

system-deps:  ## PortAudio (sounddevice), the JACK and PulseAudio servers of the real-time tests, venv support
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libportaudio2 jackd2 pulseaudio pulseaudio-utils libasound2-plugins >/dev/null; \
		$(SYSTEM_PYTHON) -c "import ensurepip" 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	else echo "not root or no apt-get: install libportaudio2, jackd2, pulseaudio and python3-venv yourself"; fi

venv:
	@test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)

lock-fresh:  ## the lock must have been made from this pyproject.toml (else a loosened pin would hide behind it)
	@grep -q "^# dependencies-sha256: $(LOCK_SOURCE_HASH)$$" $(LOCK) || \
		{ echo "error: $(LOCK) was not made from the dependencies in pyproject.toml: run 'make lock', then 'make install test'"; exit 1; }

install: lock-fresh system-deps venv
	$(PYTHON) -m pip install -q --disable-pip-version-check -c $(LOCK) -e ".[dev]"
	@$(MAKE) --no-print-directory check-install

check-install:  ## one line instead of a traceback when torch and torchaudio do not load together
	@err=$$($(PYTHON) -c "import torch, torchaudio, fsnet; t, a = (v.split('+')[0] for v in (torch.__version__, torchaudio.__version__)); assert t == a, f'torch {t} with torchaudio {a}'" 2>&1 >/dev/null) \
		&& echo "install check: torch, torchaudio and fsnet import together" \
		|| { echo "error: installed torch/torchaudio/fsnet do not load together: $$(printf '%s\n' "$$err" | tail -n 1)"; exit 1; }

lock: venv  ## re-resolve requirements.lock after editing pyproject.toml (keeps the locked versions that still fit)
	@test -x $(VENV)/bin/uv || $(PYTHON) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile -q --universal --python-version 3.10 pyproject.toml --extra dev \
		--custom-compile-command "make lock" -o $(LOCK) $(UV_FLAGS)
	@sed -i "1i # dependencies-sha256: $(LOCK_SOURCE_HASH)" $(LOCK)

lock-upgrade:  ## the same, taking the newest versions the ranges allow
	@$(MAKE) --no-print-directory lock UV_FLAGS=--upgrade

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench:
	$(PYTHON) benchmarks/cpu_streaming.py

demo:
	$(PYTHON) evaluate.py
