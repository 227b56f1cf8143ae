"""A private PulseAudio server for end-to-end tests (``pulse_server``).

Two 48 kHz null sinks: "room" (its monitor is the default source, the microphone) and
"speakers" (the default sink). If the server cannot start, the tests are skipped with
pulseaudio's own message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest


def pulse_server(tmp_path_factory):
    """For a fixture to ``yield from``: the environment of a private PulseAudio server."""
    pulseaudio, pactl = shutil.which("pulseaudio"), shutil.which("pactl")
    if not (pulseaudio and pactl and shutil.which("paplay")):
        pytest.skip(
            "pulseaudio/pactl/paplay not found (apt-get install pulseaudio pulseaudio-utils)"
        )
    runtime = tmp_path_factory.mktemp("pulse")
    # the server's socket, cookie and state go to the test's folder, not the user's
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(runtime)}
    for key in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE", "JACK_DEFAULT_SERVER"):
        env.pop(key, None)
    log = open(runtime / "pulseaudio.log", "w+")
    sinks = [
        f"--load=module-null-sink sink_name={n} rate=48000 channels=2" for n in ("room", "speakers")
    ]
    server = subprocess.Popen(
        [pulseaudio, "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
         "--load=module-native-protocol-unix auth-anonymous=1", *sinks],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while subprocess.run([pactl, "info"], env=env, capture_output=True).returncode != 0:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            log.seek(0)
            lines = log.read().strip().splitlines()
            pytest.skip(f"pulseaudio did not start: {lines[-1] if lines else 'no output'}")
        time.sleep(0.1)
    subprocess.run([pactl, "set-default-source", "room.monitor"], env=env, check=True)
    subprocess.run([pactl, "set-default-sink", "speakers"], env=env, check=True)
    yield env
    server.terminate()
    server.wait(10)
    log.close()
