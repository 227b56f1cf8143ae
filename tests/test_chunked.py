"""Any length in bounded memory: the chunked forward with carried state equals the whole one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL_CONFIG

import fsnet
from fsnet.layers import CELL_LOOP_FRAMES, RecurrentLayer

TINY = {**TINY_MODEL_CONFIG, "bottleneck_num_layers": 2}  # a stacked sub-band LSTM


def tiny_model(seed: int = 0, **overrides) -> fsnet.FastFullSubNet:
    torch.manual_seed(seed)
    return fsnet.build_model({**TINY, **overrides}).eval()


def run_in_chunks(model, mag: torch.Tensor, sizes, state) -> torch.Tensor:
    """``forward_chunk`` over ``mag [B, 1, F, T]`` in chunks of the given sizes (cycled)."""
    outs, start, k = [], 0, 0
    while start < mag.shape[-1]:
        n = int(sizes[k % len(sizes)])
        outs.append(model.forward_chunk(mag[..., start : start + n], state))
        start, k = start + n, k + 1
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("look_ahead", [0, 2])
@pytest.mark.parametrize("shrink_size", [1, 2, 3])
def test_chunked_forward_equals_whole(shrink_size, look_ahead):
    model = tiny_model(look_ahead=look_ahead, shrink_size=shrink_size)
    with torch.inference_mode():
        check_chunked_forward(model, shrink_size, look_ahead)


def check_chunked_forward(model, shrink_size: int, look_ahead: int) -> None:
    gen = torch.Generator().manual_seed(shrink_size * 10 + look_ahead)
    mag = 3 * torch.rand(2, 1, model.config.num_freqs, 157, generator=gen)
    whole = model(mag)
    padded = torch.nn.functional.pad(mag, (0, look_ahead))  # as forward drains the look-ahead
    rng = np.random.default_rng(shrink_size)
    for sizes in ([1], [2], [3], [7], [64], rng.integers(1, 40, size=30)):
        # both state forms: created on first use (whole sequences), and fixed-layout (streamer)
        for state in (model.init_state(), model.init_state(2)):
            chunked = run_in_chunks(model, padded, sizes, state)[..., look_ahead:]
            assert chunked.shape == whole.shape
            assert (chunked - whole).abs().max() <= 1e-5, list(sizes)
        assert state["frames"] == padded.shape[-1]


@pytest.mark.parametrize("rows", [1, 3, 64])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_short_sequences_on_cells_equal_the_sequence_kernel(rows, num_layers):
    """RecurrentLayer runs fewer than CELL_LOOP_FRAMES frames on cells (few rows: MKL, ATen's tanh;
    many rows: oneDNN, tanh through sigmoid): the same numbers as nn.LSTM, state carried."""
    torch.manual_seed(rows + num_layers)
    layer = RecurrentLayer(12, 24, num_layers=num_layers).eval()
    sizes = (3, 1, CELL_LOOP_FRAMES - 1, 7, 2, 1, 1, CELL_LOOP_FRAMES)  # the last: the kernel
    x = torch.randn(rows, sum(sizes), 12)
    with torch.inference_mode():
        whole, whole_state = layer.rnn(x)
        state, outs, start = None, [], 0
        for n in sizes:
            y, state = layer(x[:, start : start + n], state)
            outs.append(y)
            start += n
    assert (torch.cat(outs, dim=1) - whole).abs().max() <= 1e-5
    for mine, reference in zip(state, whole_state, strict=True):
        assert (mine - reference).abs().max() <= 1e-5


@pytest.mark.parametrize("look_ahead", [0, 2])
@pytest.mark.parametrize("shrink_size", [1, 3])
def test_enhance_in_chunks_equals_whole_signal(shrink_size, look_ahead):
    model = tiny_model(look_ahead=look_ahead, shrink_size=shrink_size)
    x = np.random.default_rng(shrink_size).uniform(-1, 1, 3 * 16000 + 77).astype(np.float32)
    whole = fsnet.enhance(model, x, chunk_seconds=None)
    for chunk_seconds in (0.016, 0.05, 0.7, 10.0):  # one hop, odd sizes, one chunk
        out = fsnet.enhance(model, x, chunk_seconds=chunk_seconds)
        assert out.shape == x.shape and out.dtype == np.float32
        assert np.abs(out - whole).max() <= 1e-5, chunk_seconds
    tensor_out = fsnet.enhance(model, torch.from_numpy(x), chunk_seconds=0.05)
    assert isinstance(tensor_out, torch.Tensor)
    assert (tensor_out.numpy() - whole).max() <= 1e-5
    assert not model.training


def test_enhance_keeps_the_training_mode_and_utterance_norm_runs_whole():
    model = tiny_model().train()
    x = np.random.default_rng(1).uniform(-1, 1, 5000).astype(np.float32)
    fsnet.enhance(model, x, chunk_seconds=0.1)
    assert model.training
    torch.manual_seed(0)
    utterance = fsnet.FastFullSubNet({**TINY}, norm="utterance").eval()
    np.testing.assert_array_equal(
        fsnet.enhance(utterance, x, chunk_seconds=0.1),
        fsnet.enhance(utterance, x, chunk_seconds=None),
    )


def test_multi_hop_calls_run_as_one_chunk(monkeypatch):
    """One network call per process() call, however many hops it brings (up to the chunk cap)."""
    model = tiny_model()
    engine = fsnet.StreamingEnhancer(model, max_chunk_seconds=0.1)  # 6 frames at most
    frames_per_call = []
    original = model.forward_chunk
    monkeypatch.setattr(
        model,
        "forward_chunk",
        lambda mag, state: frames_per_call.append(mag.shape[-1]) or original(mag, state),
    )
    x = np.random.default_rng(2).uniform(-1, 1, 20 * 256).astype(np.float32)
    engine.process(x[:1024])
    engine.process(x[1024 : 1024 + 768 + 10])
    assert frames_per_call == [4, 3]
    engine.process(x[: 20 * 256])
    assert frames_per_call[2:] == [6, 6, 6, 2]


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    import fsnet

    def peak_mib():
        # VmHWM: this process image's own peak (ru_maxrss can carry the forking parent's peak)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

    torch.set_num_threads(1)
    config, seconds, chunk_seconds = json.loads(sys.argv[1])
    model = fsnet.build_model(config).eval() if config else fsnet.load_model()
    x = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * 16000)).astype(np.float32)
    fsnet.enhance(model, x[:32000], chunk_seconds=chunk_seconds)  # warm-up
    before = peak_mib()
    t0 = time.perf_counter()
    y = fsnet.enhance(model, x, chunk_seconds=chunk_seconds)
    seconds_taken = time.perf_counter() - t0
    peak = peak_mib()
    assert y.shape == x.shape and np.isfinite(y).all()
    print(json.dumps({"before_mib": before, "peak_mib": peak, "seconds": seconds_taken}))
    """
)


def enhance_peak(config, seconds: float, chunk_seconds) -> dict:
    """Peak resident memory of ``enhance`` on ``seconds`` of audio, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, json.dumps([config, seconds, chunk_seconds])],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_memory_is_bounded_by_the_chunk_not_the_input():
    """Four minutes with the tiny model: the chunked path grows by the input and output arrays
    (15 MB each) and a chunk's working set; the whole-signal forward grows with the length."""
    minutes = 4
    chunked = enhance_peak(TINY, minutes * 60, 10.0)
    whole = enhance_peak(TINY, minutes * 60, None)
    growth = {
        k: r["peak_mib"] - r["before_mib"] for k, r in (("chunked", chunked), ("whole", whole))
    }
    assert growth["chunked"] < 80, growth
    assert growth["whole"] > 2 * growth["chunked"] + 80, growth  # the check can fail


@pytest.mark.slow
def test_one_hour_with_the_bundled_model_stays_under_2_gb():
    result = enhance_peak(None, 3600, 10.0)
    print(f"one hour, bundled model: peak {result['peak_mib']:.0f} MiB, {result['seconds']:.0f} s")
    assert result["peak_mib"] < 2000, result
