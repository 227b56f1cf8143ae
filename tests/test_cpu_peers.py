"""benchmarks/cpu_peers.py on one short file with a tiny model: the fsnet rows are measured, the
peers that are not installed get a "skipped" row, and installed peers stream a file."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL_CONFIG, noise_like, write

import fsnet
from fsnet.checkpoint import save_release
from fsnet.int8 import INT8_ENTRY, calibrate

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import cpu_peers  # noqa: E402

FSNET_ROWS = ("fp32,", "static int8", "dynamic int8", "fp32 offline")  # ONNX: export too slow


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    torch.manual_seed(0)
    model = fsnet.build_model(TINY_MODEL_CONFIG).eval()
    x = noise_like(np.random.default_rng(1), 1.0)
    path = tmp_path_factory.mktemp("release") / "tiny.pt"
    return save_release(model, path, extra={INT8_ENTRY: calibrate(model, [x])})


def test_table_has_fsnet_rows_and_skips_absent_peers(tmp_path, tiny_release, monkeypatch):
    monkeypatch.setattr(cpu_peers, "_package_dir", lambda _package: None)  # no peer installed
    write(tmp_path / "set" / "noisy" / "a.wav", noise_like(np.random.default_rng(2), 1.0))
    out, result = tmp_path / "table.md", tmp_path / "result.json"
    argv = ["--checkpoint", str(tiny_release), "--testset", str(tmp_path / "set"), "--no-onnx"]
    cpu_peers.main([*argv, "--max-files", "1", "--out", str(out), "--json", str(result)])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("`python benchmarks/cpu_peers.py --checkpoint")
    assert "1 files, 1.0 s of audio" in lines[0] and "pyrnnoise " in lines[0]
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ")}
    for part in FSNET_ROWS:
        (row,) = [line for name, line in rows.items() if name.startswith(f"fsnet {part}")]
        assert "skipped" not in row and float(row.split(" | ")[1]) > 0
    for peer in ("RNNoise", "DeepFilterNet3", "GTCRN"):
        (row,) = [line for name, line in rows.items() if name.startswith(peer)]
        assert "not installed — skipped" in row
    assert "Hop latency of fsnet" in lines[-1] and "p99" in lines[-1]
    stored = json.loads(result.read_text())
    assert stored["hop"]["calls"] == 62  # 16000 samples in 256-sample calls
    measured = [r for r in stored["rows"].values() if r.get("cpu_rtf")]
    assert all(r["samples_out"] >= 16000 for r in measured)


def test_installed_peers_stream_a_file():
    found = cpu_peers.peers(argparse.Namespace(df3_model=None, gtcrn_onnx=None))
    installed = {name: p for name, p in found.items() if not isinstance(p, str)}
    if not installed:
        pytest.skip("no peer denoiser installed")
    x = noise_like(np.random.default_rng(3), 0.5)
    for name, peer in installed.items():
        peer.start()
        y = peer.run_file(x)
        assert np.isfinite(y).all(), name
        assert abs(len(y) - len(x)) <= 2 * cpu_peers.BLOCK, (name, len(y))
