# Everyday commands; CI (.ci/run) uses the same ones.
PYTHON ?= python

.PHONY: install system-deps test test-slow lint format bench demo

system-deps:  ## PortAudio (sounddevice) and the JACK and PulseAudio servers used by the real-time tests
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libportaudio2 jackd2 pulseaudio pulseaudio-utils libasound2-plugins >/dev/null; \
	else echo "not root or no apt-get: install libportaudio2, jackd2 and pulseaudio yourself"; fi

install: system-deps
	$(PYTHON) -m pip install -q -e ".[dev]"

test:
	$(PYTHON) -m pytest -q

test-slow:
	$(PYTHON) -m pytest -q -m slow

lint:
	ruff check .
	ruff format --check .

format:
	ruff format .
	ruff check --fix .

bench:
	$(PYTHON) benchmarks/cpu_streaming.py

demo:
	$(PYTHON) evaluate.py
