#!/usr/bin/env bash
# On a lent GPU machine with no network: install the wheels carried in .whl/, building pesq and
# antlr4 from their sdists there (pesq has no cp312 wheel). Then: export PYTHONPATH=/tmp/site:$PWD
set -e
python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/build-tools \
    .whl/wheel-*.whl .whl/cython-*.whl .whl/pytest_runner-*.whl
(cd .whl && PYTHONPATH=/tmp/build-tools PIP_NO_INDEX=1 PIP_FIND_LINKS=. \
    python3 -m pip wheel -q --no-deps --no-build-isolation pesq-0.0.4.tar.gz antlr4-python3-runtime-4.9.3.tar.gz)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v -e '/wheel-' -e '/cython-' -e '/pytest_runner-')
