"""End to end through a real audio server: jackd (dummy backend) -> PortAudio -> stream_infer.py.

A harness JACK client plays a noisy signal into the program's input ports and records the
program's output port in the same process cycle, so the recording's lag is the true round trip.
Measured on the dummy backend (16 kHz, period 256): a pass-through program comes back exactly
1 period (256 samples) late -- the harness<->program feedback loop costs one cycle (the same
with a plain JACK client as the program); PortAudio adds nothing because the program opens the
stream with blocksize 0 (an explicit ``--blocksize 256`` makes it 2 periods) -- and the
enhancer exactly ``latency_samples`` (768) later than that.

The server is started by the fixture (unique name per run); if it cannot start, the tests are
skipped with jackd's own message.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.jack_harness import (
    JackUnavailable,
    make_noisy,
    measure_delay,
    run_loop,
    save_tiny_model,
    start_jackd,
)

pytestmark = pytest.mark.jack

SECONDS = 2.0
TAIL = 0.5


def _server(tmp_path_factory, rate: int, period: int):
    try:
        return start_jackd(rate, period, log_dir=tmp_path_factory.mktemp("jackd"))
    except JackUnavailable as exc:
        reason = f"JACK server unavailable: {exc}"
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server16(tmp_path_factory):
    server = _server(tmp_path_factory, 16000, 256)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import fsnet

    path = save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")
    return path, fsnet.load_model(path)


@pytest.fixture(scope="module")
def noisy16():
    """Real noisy speech from tests/assets if it is there, else a synthetic stand-in."""
    asset = Path(__file__).parent / "assets" / "noisy_speech.wav"
    if asset.exists():
        x, sr = sf.read(asset, dtype="float32", always_2d=True)
        if sr == 16000 and len(x) >= 16000:
            return np.ascontiguousarray(x[:, 0])
    return make_noisy(SECONDS, 16000, seed=1)


def _drops(result) -> dict:
    s = result.summary
    assert result.rc == 0, result.stderr
    assert s, f"no summary JSON written:\n{result.stderr}"
    assert s["stop_reason"] == "stopped by SIGINT", s
    return {k: s[k] for k in ("input_overflows", "output_underflows", "late_blocks") if s[k]}


def loop(server, feed, args, tmp_path, **kw):
    """run_loop, asserting the program reported no dropped or late block.

    An xrun on a JACK server is global: when the machine starves the whole graph (a loaded CI
    runner), every client, the harness too, is told about it. Such a run is repeated once; the
    second must be clean, so a program that is itself too slow still fails.
    """
    for attempt in (1, 2):
        result = run_loop(
            server, feed, args, tmp_path / f"summary{attempt}.json", tail_seconds=TAIL, **kw
        )
        drops = _drops(result)
        if not drops:
            return result
        message = (
            f"dropped blocks {drops} (harness xruns {result.harness_xruns}, {result.harness_info})\n"
            f"{result.stderr}"
        )
        if attempt == 2 or not result.harness_xruns:
            pytest.fail(message)
        warnings.warn(f"JACK xrun on attempt 1, retrying: {message}", stacklevel=2)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def passthrough_delay(server16, noisy16, tmp_path_factory):
    """Round trip of the JACK/PortAudio path alone (``--passthrough``: no model)."""
    tmp = tmp_path_factory.mktemp("passthrough")
    result = loop(server16, noisy16, ["--passthrough"], tmp)
    lag, corr = measure_delay(noisy16, result.recording, 4 * server16.rate)
    return lag, corr, result


def test_passthrough_round_trip(passthrough_delay, server16):
    lag, corr, result = passthrough_delay
    assert corr > 0.9999, result.stderr
    # the harness<->program loop: 1 period; PortAudio (blocksize 0) and the program add nothing
    assert lag == server16.period, f"pass-through delay {lag} samples (expected 1 period)"
    assert result.summary["prefill_frames"] == 0
    assert result.summary["blocksize"] == server16.period


def test_enhancement_through_jack_matches_offline(
    server16, tiny, noisy16, passthrough_delay, tmp_path
):
    import fsnet

    path, model = tiny
    latency = model.config.latency_samples
    result = loop(
        server16,
        noisy16,
        [
            "--checkpoint",
            str(path),
            "--record",
            str(tmp_path / "enh.wav"),
            "--record-noisy",
            str(tmp_path / "cap.wav"),
            "--subtype",
            "FLOAT",
        ],
        tmp_path,
    )
    assert result.summary["algorithmic_latency_samples"] == latency

    # What the program received and what it says it produced, sample for sample.
    capture, sr = sf.read(tmp_path / "cap.wav", dtype="float32")
    recorded, _ = sf.read(tmp_path / "enh.wav", dtype="float32")
    assert sr == 16000 and len(capture) == len(recorded) > len(noisy16)
    offline = fsnet.enhance(model, capture)
    np.testing.assert_allclose(recorded, offline, atol=1e-4)
    start, corr_in = measure_delay(noisy16, capture, len(capture) - len(noisy16))
    assert corr_in > 0.9999

    # What actually came out of the program's JACK port.
    expected = offline[start : start + len(noisy16)]
    lag, corr = measure_delay(expected, result.recording, 4 * server16.rate)
    pass_lag = passthrough_delay[0]
    assert corr > 0.99, f"correlation {corr:.4f}"
    assert lag == pass_lag + latency, f"delay {lag} != JACK path {pass_lag} + algorithmic {latency}"
    # and against the offline enhancement of the file alone (no silence before it)
    lag2, corr2 = measure_delay(fsnet.enhance(model, noisy16), result.recording, 4 * server16.rate)
    assert corr2 > 0.99 and lag2 == lag


def test_worker_thread_engine_adds_exactly_its_queue(
    server16, tiny, noisy16, passthrough_delay, tmp_path
):
    import fsnet

    path, model = tiny
    result = loop(
        server16,
        noisy16,
        ["--checkpoint", str(path), "--engine", "thread", "--queue-blocks", "2"],
        tmp_path,
    )
    lag, corr = measure_delay(fsnet.enhance(model, noisy16), result.recording, 4 * server16.rate)
    assert corr > 0.99
    assert lag == passthrough_delay[0] + model.config.latency_samples + 2 * server16.period


def test_48k_server_resampled_in_stream(tiny, tmp_path_factory, tmp_path):
    """A 48 kHz server: capture resampled to 16 kHz and back inside the stream (soxr)."""
    import soxr

    import fsnet

    # period 768 = 3 x 256: every cycle starts on the 16 kHz grid, so the signal reaches the
    # model without a fractional-sample shift and must match the offline enhancement exactly
    server = _server(tmp_path_factory, 48000, 768)
    try:
        path, model = tiny
        x16 = make_noisy(SECONDS, 16000, seed=2)
        x48 = soxr.resample(x16, 16000, 48000, quality="VHQ").astype(np.float32)
        result = loop(server, x48, ["--checkpoint", str(path)], tmp_path)
    finally:
        server.stop()
    s = result.summary
    assert s["device_rate"] == 48000 and s["blocksize"] == 768 and s["resample_quality"] == "HQ"
    reference = soxr.resample(fsnet.enhance(model, x16), 16000, 48000, quality="VHQ")
    lag, corr = measure_delay(reference, result.recording, 48000)
    assert corr > 0.99, f"correlation {corr:.4f}"
    assert s["delay_grown_frames"] == 0
    expected = server.period + s["prefill_frames"] + 3 * model.config.latency_samples
    assert lag == expected, f"delay {lag} samples, expected {expected}"
