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
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from helpers.jack_harness import REPO, make_noisy, measure_delay, save_tiny_model
from helpers.pulse_server import pulse_server

pytestmark = pytest.mark.pulse

SIGNAL_SECONDS = 2.0


@pytest.fixture(scope="module")
def pulse_env(tmp_path_factory):
    yield from pulse_server(tmp_path_factory)


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
