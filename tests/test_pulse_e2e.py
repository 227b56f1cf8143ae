"""End to end through PulseAudio, the sound server of most Linux desktops (PipeWire serves the
same protocol): a private pulseaudio with two null sinks -> ALSA's pulse plugin -> PortAudio ->
stream_infer.py --mic on the system default devices, as a user runs it.

``paplay`` plays a test signal into the "room" sink, whose monitor is the default source (the
microphone); the program plays into "speakers". What the program recorded must be the test
signal, its enhanced recording must equal ``fsnet.enhance`` of that capture, nothing may be
dropped, and the terminal must show no C-library chatter. PortAudio's ALSA backend flags one
output underflow when a PulseAudio stream starts; it must be reported as start-up, not as lost
audio. If the server cannot start, the tests are skipped with pulseaudio's own message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from helpers.jack_harness import REPO, make_noisy, measure_delay, save_tiny_model

pytestmark = pytest.mark.pulse

SIGNAL_SECONDS = 2.0


@pytest.fixture(scope="module")
def pulse_env(tmp_path_factory):
    """Environment of a private PulseAudio server (48 kHz null sinks "room" and "speakers")."""
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


def test_mic_through_pulseaudio_records_enhances_and_drops_nothing(pulse_env, tmp_path):
    import fsnet

    model_path = save_tiny_model(tmp_path / "tiny.pt")
    played = make_noisy(SIGNAL_SECONDS)
    sf.write(tmp_path / "played.wav", played, 16000, subtype="FLOAT")
    cmd = [
        sys.executable, str(REPO / "stream_infer.py"), "--mic", "--checkpoint", str(model_path),
        "--duration", str(SIGNAL_SECONDS + 2.5), "--record", str(tmp_path / "enhanced.wav"),
        "--record-noisy", str(tmp_path / "captured.wav"), "--subtype", "FLOAT",
        "--summary-json", str(tmp_path / "summary.json"),
    ]  # fmt: skip
    program = subprocess.Popen(
        cmd, env=pulse_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    stderr = []
    for line in program.stderr:  # play only once the stream runs
        stderr.append(line)
        if line.startswith("listening:"):
            break
    subprocess.run(
        ["paplay", "-d", "room", str(tmp_path / "played.wav")], env=pulse_env, check=True
    )
    stderr += program.stderr.readlines()
    assert program.wait(30) == 0, "".join(stderr)
    text = "".join(stderr)
    assert "ALSA lib" not in text and "warning:" not in text, text

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["input_device"] == "default" and summary["output_device"] == "default"
    dropped = summary["input_overflows"] + summary["output_underflows"] + summary["late_blocks"]
    assert dropped == 0 and summary["drop_callbacks"] == [], summary
    assert summary["startup_output_underflows"] <= 1

    captured, rate = sf.read(tmp_path / "captured.wav", dtype="float32")
    enhanced, _ = sf.read(tmp_path / "enhanced.wav", dtype="float32")
    assert rate == 16000 and len(captured) == len(enhanced)
    # the capture is the played signal (resampled 16 -> 48 -> 16 kHz by the server)
    lag, corr = measure_delay(played, captured, max_lag=len(captured) - len(played))
    assert corr > 0.9, (lag, corr)
    reference = fsnet.enhance(fsnet.load_model(model_path), captured)
    np.testing.assert_allclose(enhanced, reference, atol=1e-4)
    assert np.abs(enhanced[lag : lag + len(played)]).max() > 0.01  # not silence
