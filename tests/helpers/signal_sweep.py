"""Run an entry script and send it a real signal at the N-th Python function call of its main().

``python tests/helpers/signal_sweep.py SIGINT|SIGTERM N SCRIPT [ARGS...]`` (from the repository root).
With an N past the end it runs to completion and prints ``signal-sweep calls: <total>`` on stderr,
which is how a sweep learns the range to spread its points over. Calls are counted on the main
thread, where Python runs its signal handlers, so each N is one place a user's Ctrl-C can land.
"""

import importlib
import os
import runpy
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = {
    "train.py": "fsnet.train",
    "evaluate.py": "fsnet.evaluation.cli",
    "stream_infer.py": "fsnet.live.cli",
}


def main() -> None:
    signum = getattr(signal, sys.argv[1])
    target = int(sys.argv[2])
    script, args = sys.argv[3], sys.argv[4:]
    calls = 0
    sys.path.insert(0, str(REPO))  # this checkout's fsnet, not an installed copy

    def tracer(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1
            if calls == target:
                sys.settrace(None)
                os.kill(os.getpid(), signum)

    module = importlib.import_module(MODULES[script])
    real_main = module.main

    def traced_main(*a, **k):
        sys.settrace(tracer)
        try:
            return real_main(*a, **k)
        finally:
            sys.settrace(None)
            if calls < target:
                print(f"signal-sweep calls: {calls}", file=sys.stderr, flush=True)

    module.main = traced_main  # the script imports main from the module when it runs
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
