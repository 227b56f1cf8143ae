"""Static int8 (fsnet.int8): calibrated scales stored as plain data in the release file, and the
same quantised arithmetic offline and streaming, to 1e-5 like fp32."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_MODEL_CONFIG
from test_evaluate import make_dns_set  # sibling test module

import fsnet
from fsnet.checkpoint import read_checkpoint, save_release
from fsnet.errors import FsnetError
from fsnet.evaluation import evaluate
from fsnet.int8 import (
    INT8_ENTRY,
    Int8FastFullSubNet,
    calibrate,
    load_int8_model,
    quantize_static,
)
from fsnet.quantize import main
from fsnet.streaming import StreamingEnhancer, enhance_in_blocks

RATE = 16000
TINY = {**TINY_MODEL_CONFIG, "bottleneck_num_layers": 2, "shrink_size": 3}


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model() -> fsnet.FastFullSubNet:
    torch.manual_seed(0)
    return fsnet.build_model(TINY).eval()


@pytest.fixture(scope="module")
def calibration(tiny_model) -> dict:
    return calibrate(tiny_model, [noise(1.0, seed=1), noise(0.5, seed=2)])


@pytest.fixture(scope="module")
def int8_model(tiny_model, calibration) -> Int8FastFullSubNet:
    return quantize_static(tiny_model, calibration)


def test_integer_gemm_is_exact():
    """The int32 products the equality rests on: oneDNN's VNNI kernels, no int16 saturation."""
    gen = torch.Generator().manual_seed(0)
    for rows in (1, 7, 64):
        a = torch.randint(-127, 128, (rows, 200), generator=gen, dtype=torch.int8)
        w = torch.randint(-127, 128, (96, 200), generator=gen, dtype=torch.int8)
        exact = a.long() @ w.long().t()
        assert torch.equal(torch._int_mm(a, w.t()).long(), exact)


def test_offline_equals_streaming(int8_model):
    x = noise(1.0, seed=3)
    offline = fsnet.enhance(int8_model, x)
    for block in (100, 256, 999, 4096):
        streamed = enhance_in_blocks(StreamingEnhancer(int8_model), x, block)
        assert np.abs(streamed - offline).max() <= 1e-5, block
    whole = fsnet.enhance(int8_model, x, chunk_seconds=None)
    assert np.abs(whole - offline).max() <= 1e-5


def test_offline_equals_streaming_with_mask_shaping(int8_model):
    shaping = fsnet.MaskShaping(postfilter=0.5, atten_lim_db=12)
    x = noise(1.0, seed=4)
    offline = fsnet.enhance(int8_model, x, shaping=shaping)
    streamed = enhance_in_blocks(StreamingEnhancer(int8_model, shaping=shaping), x, 333)
    assert np.abs(streamed - offline).max() <= 1e-5
    assert np.abs(offline - fsnet.enhance(int8_model, x)).max() > 1e-3


def test_close_to_fp32(tiny_model, int8_model):
    x = noise(2.0, seed=4)
    fp32 = fsnet.enhance(tiny_model, x)
    int8 = fsnet.enhance(int8_model, x)
    error = np.sqrt(np.mean((int8 - fp32) ** 2) / np.mean(fp32**2))
    assert error < 0.05
    assert not np.array_equal(int8, fp32)  # the quantised layers did run


def test_release_round_trip_through_the_command(tmp_path, tiny_model, capsys):
    audio = tmp_path / "calib" / "sub"
    audio.mkdir(parents=True)
    sf.write(audio / "a.wav", noise(1.0, seed=1), RATE, subtype="FLOAT")
    sf.write(audio / "b.wav", noise(0.5, seed=2), RATE, subtype="FLOAT")
    source = save_release(tiny_model, tmp_path / "fp32.pt")
    assert main(["--calibrate", str(tmp_path / "calib"), str(source), str(tmp_path / "q.pt")]) == 0
    assert "1.5 s of audio" in capsys.readouterr().out
    payload = read_checkpoint(tmp_path / "q.pt")  # weights_only: plain data only
    assert payload[INT8_ENTRY]["seconds"] == pytest.approx(1.5)
    loaded = load_int8_model(tmp_path / "q.pt")
    direct = quantize_static(tiny_model, calibrate(tiny_model, [noise(1.0, 1), noise(0.5, 2)]))
    x = noise(1.0, seed=5)
    assert np.array_equal(fsnet.enhance(loaded, x), fsnet.enhance(direct, x))
    # the int8 release is still an fp32 release for everything else
    fp32 = fsnet.load_model(tmp_path / "q.pt")
    assert np.array_equal(fsnet.enhance(fp32, x), fsnet.enhance(tiny_model, x))


def test_command_errors_are_one_line(tmp_path, tiny_model, capsys):
    source = save_release(tiny_model, tmp_path / "fp32.pt")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--calibrate", str(tmp_path / "nope"), str(source), "o.pt"], "not a directory"),
        (["--calibrate", str(tmp_path / "empty"), str(source), "o.pt"], "no audio files"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "o.pt")], "checkpoint not found"),
        ([str(source), str(tmp_path)], "is a directory"),
        ([str(source), str(source)], "source checkpoint"),
        (["--max-seconds", "0", str(source), str(tmp_path / "o.pt")], "--max-seconds"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(FsnetError, match="holds no int8 calibration"):
        load_int8_model(source)


def test_calibration_must_fit(tiny_model, calibration):
    torch.manual_seed(0)
    other = fsnet.build_model({**TINY, "num_mels": 12}).eval()
    with pytest.raises(FsnetError, match="does not fit"):
        quantize_static(other, calibration)
    with pytest.raises(FsnetError, match="scheme"):
        quantize_static(tiny_model, {**calibration, "scheme": "v0"})
    gru = fsnet.build_model({**TINY, "rnn_type": "GRU"}).eval()
    with pytest.raises(FsnetError, match="LSTM"):
        quantize_static(gru, calibrate(gru, [noise(0.2)]))


def test_evaluate_int8_both_modes_agree(tmp_path, tiny_model, calibration):
    checkpoint = save_release(tiny_model, tmp_path / "q.pt", extra={INT8_ENTRY: calibration})
    summary = evaluate(
        {
            "checkpoint": str(checkpoint),
            "testset": str(make_dns_set(tmp_path / "set", n=2, seconds=1.0)),
            "precision": "int8",
            "mode": "both",
            "metrics": ["si_sdr"],
            "num_workers": 0,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        }
    )
    assert summary["max_abs_sample_diff"] <= 1e-5
    assert summary["streaming_matches_offline"] is True


def test_evaluate_calibrates_a_checkpoint_without_scales(tmp_path, tiny_model, monkeypatch):
    import fsnet.quantize

    audio = tmp_path / "calib"
    audio.mkdir()
    sf.write(audio / "a.wav", noise(0.5, seed=1), RATE, subtype="FLOAT")
    monkeypatch.setattr(fsnet.quantize, "DEFAULT_CALIBRATION", audio)
    summary = evaluate(
        {
            "checkpoint": str(save_release(tiny_model, tmp_path / "fp32.pt")),
            "testset": str(make_dns_set(tmp_path / "set", n=1, seconds=1.0)),
            "precision": "int8",
            "metrics": ["si_sdr"],
            "num_workers": 0,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        }
    )
    assert any("holds no int8 calibration" in n for n in summary["notices"])


def test_spectrum_does_not_depend_on_how_many_frames(tiny_model):
    """The other half of the equality: the engine analyses all the frames of a call at once
    (offline: 10 s), streaming one hop; each frame's magnitude must come out bit for bit the same."""
    frames = torch.from_numpy(noise(2.0, seed=6))[None].unfold(-1, 512, 256)
    batched = tiny_model.stft.analyze(frames).abs()
    single = [tiny_model.stft.analyze(frames[:, t : t + 1]).abs() for t in range(frames.shape[1])]
    assert torch.equal(batched, torch.cat(single, dim=-1))


@pytest.mark.parametrize(
    ("rows", "options"),
    [
        (1, {}),  # a first layer with its own input row scales, int8 projection
        (1, {"float_input": True}),
        (1, {"joint_input": True, "float_proj": True}),
        (20, {"float_input": True}),  # many rows: tanh(c) as 2 sigmoid(2c) - 1
    ],
)
def test_int8_layer_tracks_the_float_layer(rows, options):
    """Each int8 layer form stays near its float layer over a run of frames (two LSTM layers,
    so the joint [h1 | h2] GEMM runs), and updates its state in place."""
    from fsnet.int8 import Int8RecurrentLayer
    from fsnet.layers import RecurrentLayer

    torch.manual_seed(0)
    layer = RecurrentLayer(10, 24, num_layers=2, output_size=6).eval()
    x = torch.rand(rows, 12, 10) * 2 - 1
    quantized = Int8RecurrentLayer(layer, x.abs().amax(dim=(0, 1)), **options)
    with torch.inference_mode():
        expected, _ = layer(x)
        state = quantized.zero_state(rows)
        codes, c = state[0], state[1]
        frames = [quantized(x[:, t : t + 1], state)[0] for t in range(x.shape[1])]
    y = torch.cat(frames, dim=1)
    error = (y - expected).norm() / expected.norm()
    assert error < 0.03, error
    assert codes.abs().max() > 0 and c.abs().max() > 0  # the stream's own tensors moved on
    assert codes.dtype == torch.int8 and codes.shape == (
        rows,
        (0 if options.get("float_input") else 10) + 48,
    )


def test_hop_arithmetic_of_the_paper_model():
    """cpu_hop_breakdown.py's floor: about 4 GMAC per second of audio, nearly all of it in the
    hops that step the sub-band model."""
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import cpu_hop_breakdown

    cfg = fsnet.config.ModelConfig()
    stepping, waiting = cpu_hop_breakdown.hop_macs(cfg)
    per_second = (
        (waiting + (stepping - waiting) / cfg.shrink_size) * cfg.sample_rate / cfg.hop_samples
    )
    assert per_second == pytest.approx(3.9e9, rel=0.01)
    assert waiting / stepping < 0.05
