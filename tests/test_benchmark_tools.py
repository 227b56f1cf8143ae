"""The pure parts of benchmarks/train_speed.py, train_curves.py and loop_runs.py (their GPU runs
are smoke-tested by hand: see each script's docstring)."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL_CONFIG

from fsnet.config import ModelConfig
from fsnet.model import build_model

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import loop_runs  # noqa: E402
import train_curves  # noqa: E402
import train_speed  # noqa: E402


def _executed_flops(model: torch.nn.Module, mag: torch.Tensor) -> int:
    """FLOP of the recurrent and linear GEMMs the model actually runs on ``mag``, from the shapes
    its nn.LSTM / nn.Linear modules see (the counting rule of train_speed's docstring)."""
    total = 0

    def lstm_hook(module, inputs, _output):
        nonlocal total
        x = inputs[0]  # [N, T, I], batch_first
        rows, frames = x.shape[0], x.shape[1]
        size, hidden = module.input_size, module.hidden_size
        for k in range(module.num_layers):
            total += 2 * 4 * hidden * ((size if k == 0 else hidden) + hidden) * rows * frames

    def linear_hook(module, inputs, _output):
        nonlocal total
        total += (
            2 * module.in_features * module.out_features * inputs[0].numel() // inputs[0].shape[-1]
        )

    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            m.register_forward_hook(lstm_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        model(mag)
    return total


@pytest.mark.parametrize("samples", [16000, 16256, 49152])
def test_flop_count_matches_what_the_model_runs(samples):
    cfg = ModelConfig.from_dict(TINY_MODEL_CONFIG)
    model = build_model(cfg).eval()
    mag = model.stft.stft(torch.zeros(2, samples)).abs()[:, None]
    counted = 2 * sum(train_speed.forward_flops(cfg, samples).values())
    assert counted == _executed_flops(model, mag)
    assert train_speed.training_flops(cfg, 2, samples) == 3 * counted


def test_flop_count_of_the_paper_model():
    # Batch 72 x 3.072 s: about 5.3 TFLOP per training step, the sub-band model ~92 % of it.
    parts = train_speed.forward_flops(ModelConfig(), 49152)
    assert train_speed.training_flops(ModelConfig(), 72, 49152) == pytest.approx(5.27e12, rel=0.01)
    assert parts["subband"] / sum(parts.values()) == pytest.approx(0.92, abs=0.01)


def test_loop_specs_and_overrides():
    label, overrides = train_speed.parse_loop("fast b256=system.cuda_graph=step 'a.b=[1, 2]'")
    assert label == "fast b256" and overrides == ["system.cuda_graph=step", "a.b=[1, 2]"]
    assert train_speed.parse_loop("plain=") == ("plain", [])
    with pytest.raises(SystemExit):
        train_speed.parse_loop("=x=1")
    merged = loop_runs.merge_overrides(["a=1", "+b.c=2", "d=3"], ["b.c=5", "~d"])
    assert merged == ["a=1", "b.c=5", "~d"]
    command = loop_runs.train_command(REPO_ROOT, REPO_ROOT / "run", 10, ["trainer=cpu"])
    assert command.count("trainer=cpu") == 1 and "trainer=gpu" not in command


def test_ratios_and_table():
    rows = [
        {"kind": "original", "name": "o", "batch": 72, "audio_s_per_s": 4000.0, "tflops": 100.0},
        {"kind": "original", "name": "o", "batch": 256, "audio_s_per_s": 5000.0, "tflops": 120.0},
        {"kind": "train_loop", "name": "l", "batch": 256, "audio_s_per_s": 10000.0, "tflops": 1.0},
        {"kind": "train_loop", "name": "l", "batch": 8, "audio_s_per_s": 2000.0, "tflops": 1.0},
    ]
    for r in rows:
        r.update(precision="bf16", ms_per_step=1.0)
    train_speed.add_ratios(rows, peak_tflops=1000.0)
    assert [r["vs_original"] for r in rows] == [1.0, 1.0, 2.0, 0.5]
    assert rows[3]["vs_original_batch"] == 72 and rows[0]["mfu"] == 0.1
    setting = dict(device="GPU", date="d", torch="t", cudnn=1, peak_tflops=1000.0, command="c")
    table = train_speed.markdown(rows, setting)
    assert "| l | 256 | bf16 | 1.0 | 10,000 | 2.00 |" in table and "(vs batch 72)" in table


def test_curve_summary():
    assert train_curves.moving_average([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    curve = {"train/loss": ([0, 10], [1.0, 0.5]), "val/pesq_wb": ([5], [2.0])}
    runs = [
        {"label": "fast", "curves": curve},
        {"label": "fast, other seed", "curves": {**curve, "val/pesq_wb": ([5], [2.5])}},
        {"label": "reference", "curves": {**curve, "val/pesq_wb": ([5], [2.1])}},
    ]
    diff = train_curves.summary(runs)["differences"]["val/pesq_wb"]
    assert diff["fast - reference"] == pytest.approx(-0.1)
    assert diff["fast - fast(other seed)"] == pytest.approx(-0.5)
