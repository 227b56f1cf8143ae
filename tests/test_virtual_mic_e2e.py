"""``--virtual-mic`` end to end on a private PulseAudio server (see helpers.pulse_server).

``paplay`` plays a noisy signal into the "room" sink (whose monitor is the default microphone);
the program creates the virtual microphone and ``parecord``, the server's own client, records
from it. The recording must be ``fsnet.enhance`` of what the program captured, after a delay
measured by cross-correlation, with nothing dropped; after SIGINT, and after SIGKILL plus a
restart and a SIGINT, the server must list no fsnet module.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import soxr
from helpers.jack_harness import REPO, make_noisy, measure_delay, save_tiny_model
from helpers.pulse_server import pulse_server

pytestmark = pytest.mark.pulse

SIGNAL_SECONDS = 3.0
SOURCE = "fsnet_denoised_microphone"  # the source name the default --name gives
# The program plays at the sink's rate and parecord records at it, so the server resamples
# nothing on the way out: a 16 -> 48 -> 16 kHz round trip through the server shifts the signal
# by a fraction of a sample that changes from run to run and costs ~1 % of correlation.
DEVICE_RATE = 48000
START_TIMEOUT_S = 60.0  # model load on a loaded 2-core machine


@pytest.fixture(scope="module")
def pulse_env(tmp_path_factory):
    yield from pulse_server(tmp_path_factory)


def _start(env: dict, model, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """Start --virtual-mic and return once it streams (its stderr lines so far)."""
    cmd = [sys.executable, str(REPO / "stream_infer.py"), "--virtual-mic",
           "--checkpoint", str(model), "--status-interval", "0", *extra]  # fmt: skip
    program = subprocess.Popen(
        cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines = []
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in program.stderr:
        lines.append(line)
        if line.startswith("listening:") or time.monotonic() > deadline:
            break
    assert lines and lines[-1].startswith("listening:"), "".join(lines)
    return program, lines


def _fsnet_modules(env: dict) -> list[str]:
    listing = subprocess.run(
        ["pactl", "list", "modules", "short"], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if "fsnet" in line]


def _stop(program: subprocess.Popen, lines: list[str]) -> str:
    program.send_signal(signal.SIGINT)
    lines += program.stderr.readlines()
    assert program.wait(30) == 0, "".join(lines)
    return "".join(lines)


def test_virtual_mic_records_enhanced_signal_and_cleans_up(pulse_env, tmp_path):
    import fsnet

    model_path = save_tiny_model(tmp_path / "tiny.pt")
    played = make_noisy(SIGNAL_SECONDS)
    sf.write(tmp_path / "played.wav", played, 16000, subtype="FLOAT")
    program, lines = _start(
        pulse_env, model_path, "--record-noisy", str(tmp_path / "captured.wav"),
        "--record", str(tmp_path / "enhanced.wav"), "--subtype", "FLOAT",
        "--summary-json", str(tmp_path / "summary.json"), "--samplerate", str(DEVICE_RATE),
    )  # fmt: skip
    recorder = subprocess.Popen(
        ["parecord", "-d", SOURCE, f"--rate={DEVICE_RATE}", "--channels=1", "--format=float32le",
         "--file-format=wav", str(tmp_path / "recorded.wav")],
        env=pulse_env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)
    subprocess.run(
        ["paplay", "-d", "room", str(tmp_path / "played.wav")], env=pulse_env, check=True
    )
    # the signal's end reaches the source after the input and output buffers of the server and
    # the program: well under a second, but the machine may be busy with other work
    time.sleep(2.5)
    recorder.send_signal(signal.SIGINT)
    assert recorder.wait(15) == 0, recorder.stderr.read()
    text = _stop(program, lines)
    assert _fsnet_modules(pulse_env) == [], text
    assert "warning:" not in text and "ALSA lib" not in text, text

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["output_device"] == "pulse" and summary["stop_reason"] == "stopped by SIGINT"
    dropped = summary["input_overflows"] + summary["output_underflows"] + summary["late_blocks"]
    assert dropped == 0 and summary["drop_callbacks"] == [], summary

    captured, _ = sf.read(tmp_path / "captured.wav", dtype="float32")
    enhanced, _ = sf.read(tmp_path / "enhanced.wav", dtype="float32")
    recorded, rate = sf.read(tmp_path / "recorded.wav", dtype="float32")
    assert rate == DEVICE_RATE
    reference = fsnet.enhance(fsnet.load_model(model_path), captured)
    np.testing.assert_allclose(enhanced, reference, atol=1e-4)
    # where the played signal sits in the capture, then where its enhancement sits in the
    # recording, at the device rate (the program resampled it with soxr HQ)
    start, corr = measure_delay(played, captured, max_lag=len(captured) - len(played))
    assert corr > 0.9, (start, corr)
    segment = reference[start : start + len(played) + summary["algorithmic_latency_samples"]]
    assert np.abs(segment).max() > 0.01  # not silence
    segment = soxr.resample(segment, 16000, DEVICE_RATE, "HQ")
    lag, corr = measure_delay(segment, recorded, max_lag=len(recorded) - len(segment))
    assert corr > 0.99, (lag, corr)


def test_virtual_mic_after_sigkill_restart_replaces_the_dead_runs_device(pulse_env, tmp_path):
    model_path = save_tiny_model(tmp_path / "tiny.pt")
    program, _ = _start(pulse_env, model_path)
    assert len(_fsnet_modules(pulse_env)) == 2, _fsnet_modules(pulse_env)
    program.kill()  # no cleanup: the sink and source stay behind
    program.wait(10)
    assert len(_fsnet_modules(pulse_env)) == 2, _fsnet_modules(pulse_env)
    program, lines = _start(pulse_env, model_path)
    modules = _fsnet_modules(pulse_env)
    owned = all(f"fsnet.owner_pid={program.pid}" in m for m in modules)
    assert len(modules) == 2 and owned, (program.pid, modules)
    text = _stop(program, lines)
    assert _fsnet_modules(pulse_env) == [], text


def test_virtual_mic_name_taken_is_one_line_error(pulse_env, tmp_path):
    subprocess.run(
        ["pactl", "load-module", "module-null-sink", "sink_name=other",
         "sink_properties=device.description=taken"],
        env=pulse_env, check=True, capture_output=True,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "stream_infer.py"), "--virtual-mic", "--name",
         "Monitor of taken", "--passthrough"],
        env=pulse_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: a source named 'Monitor of taken' already exists"), (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1 and _fsnet_modules(pulse_env) == []


def test_virtual_mic_stops_when_its_device_is_removed(pulse_env, tmp_path):
    # the server would otherwise move the program's stream to the speakers
    program, lines = _start(pulse_env, save_tiny_model(tmp_path / "tiny.pt"))
    for line in reversed(_fsnet_modules(pulse_env)):
        subprocess.run(["pactl", "unload-module", line.split()[0]], env=pulse_env, check=True)
    lines += program.stderr.readlines()
    assert program.wait(30) == 0, "".join(lines)
    assert "(output device removed)" in "".join(lines)
    assert _fsnet_modules(pulse_env) == []
