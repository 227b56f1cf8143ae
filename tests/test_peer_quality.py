"""benchmarks/peer_quality.py on two short pairs with a tiny fsnet release: rows for the noisy
input and fsnet with the cheap metrics, "skipped" rows for the peers; the delay estimator finds
a known delay and ``align`` undoes it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_MODEL_CONFIG, noise_like, speech_like, write

import fsnet
from fsnet import metrics as M
from fsnet.checkpoint import save_release

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import cpu_peers  # noqa: E402
import peer_quality  # noqa: E402


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    torch.manual_seed(0)
    model = fsnet.build_model(TINY_MODEL_CONFIG).eval()
    return save_release(model, tmp_path_factory.mktemp("release") / "tiny.pt")


def _pairs(root, rng, seconds=(1.0, 1.3)):
    for i, s in enumerate(seconds):
        clean = speech_like(rng, s)
        write(root / "clean" / f"clean_fileid_{i}.wav", clean)
        write(root / "noisy" / f"noisy_fileid_{i}.wav", clean + noise_like(rng, s))


def test_table_scores_fsnet_and_skips_absent_peers(tmp_path, tiny_release, monkeypatch):
    monkeypatch.setattr(cpu_peers, "_package_dir", lambda _package: None)  # no peer installed
    _pairs(tmp_path / "set", np.random.default_rng(0))
    out, result_path, saved = tmp_path / "t.md", tmp_path / "r.json", tmp_path / "wavs"
    argv = ["--testset", str(tmp_path / "set"), "--checkpoint", str(tiny_release)]
    argv += ["--metrics", "si_sdr", "stoi", "--workers", "0", "--out", str(out)]
    result = peer_quality.main([*argv, "--json", str(result_path), "--save-dir", str(saved)])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("`python benchmarks/peer_quality.py --testset")
    assert "2 pairs, 2.3 s of noisy audio" in lines[0]
    header = "| system | WB-PESQ | NB-PESQ | STOI | ESTOI | SI-SDR dB | SIG | BAK | OVRL | P.808 |"
    assert lines[2] == header
    rows = {
        cells[1].strip(): [c.strip() for c in cells[2:-1]]
        for cells in (line.split("|") for line in lines[4:] if line.startswith("| "))
    }
    assert list(rows)[:2] == ["noisy input", "fsnet tiny.pt, offline"]
    for name in ("noisy input", "fsnet tiny.pt, offline"):
        cells = rows[name]
        assert len(cells) == 9 and cells[0] == cells[1] == cells[3] == cells[5] == ""
        assert 0 < float(cells[2]) <= 1  # STOI
        assert np.isfinite(float(cells[4]))  # SI-SDR dB
    assert 3 < float(rows["noisy input"][4]) < 8  # speech about 5 dB above the noise
    for peer in ("RNNoise", "DeepFilterNet3", "GTCRN"):
        assert "not installed — skipped" in rows[peer][0]
    (delay_line,) = [line for line in lines if line.startswith("- fsnet tiny.pt, offline: ")]
    assert "not applied (offline output is aligned)" in delay_line  # an untrained model: any lag
    stored = json.loads(result_path.read_text())
    assert stored["rows"]["fsnet tiny.pt, offline"]["means"]["si_sdr"]["n"] == 2
    assert len(stored["per_file"]) == 4 and stored["skipped"].keys() == {
        "RNNoise",
        "DeepFilterNet3",
        "GTCRN",
    }
    # the means are those of the scorer, and the saved files are the scored signals
    clean = fsnet.audio.load_audio(tmp_path / "set" / "clean" / "clean_fileid_1.wav")[0]
    y = fsnet.audio.load_audio(saved / "fsnet_tiny.pt_offline" / "noisy_fileid_1.wav")[0]
    (row,) = [r for r in result["per_file"] if r["signal"].startswith("fsnet") and "1" in r["file"]]
    assert row["si_sdr"] == pytest.approx(M.si_sdr(clean, y), abs=0.05)  # 16-bit rounding


@pytest.mark.parametrize("delay", [0, 37, 480, -12])
def test_estimated_delay_is_undone(delay):
    rng = np.random.default_rng(1)
    xs = [speech_like(rng, 1.0) + 0.3 * noise_like(rng, 1.0) for _ in range(2)]
    # an "enhanced" output: the input, quieter, delayed, with a little noise of its own
    ys = []
    for x in xs:
        n, d = len(x), abs(delay)
        late = np.r_[np.zeros(d), x[: n - d]] if delay >= 0 else np.r_[x[d:], np.zeros(d)]
        ys.append(0.5 * late + 0.05 * noise_like(rng, 1.0))
    lag, peak = peer_quality.estimate_delay(ys, xs)
    assert lag == delay and 0.8 < peak <= 1.0
    aligned = peer_quality.align(ys[0], lag, len(xs[0]))
    assert len(aligned) == len(xs[0]) and aligned.dtype == np.float32
    n = len(xs[0]) - abs(delay)
    assert np.corrcoef(aligned[:n], xs[0][:n])[0, 1] > 0.95
    if delay > 0:
        assert not aligned[-delay:].any()  # the end is zero-padded


def test_groups_table_means_per_group(tmp_path, tiny_release, monkeypatch):
    monkeypatch.setattr(cpu_peers, "_package_dir", lambda _package: None)
    _pairs(tmp_path / "set", np.random.default_rng(1), seconds=(1.0, 1.1, 1.2))
    groups = tmp_path / "types.csv"
    groups.write_text("fileid,noise_type\n0,music\n1,effects\n2,music\n")
    argv = ["--testset", str(tmp_path / "set"), "--checkpoint", str(tiny_release)]
    argv += ["--metrics", "si_sdr", "--workers", "0", "--groups", str(groups)]
    argv += ["--out", str(tmp_path / "t.md")]
    result = peer_quality.main(argv)
    table = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.count("|") == 5]
    cells = {(c[1].strip(), c[3].strip()): c for c in (line.split("|") for line in table[1:])}
    noisy = {r["file"]: r["si_sdr"] for r in result["per_file"] if r["signal"] == "noisy"}
    music = [v for f, v in noisy.items() if "fileid_0" in f or "fileid_2" in f]
    assert cells[("music", "noisy")][2].strip() == "2"
    assert float(cells[("music", "noisy")][4]) == pytest.approx(np.mean(music), abs=1e-3)
    assert float(cells[("effects", "noisy")][4]) == pytest.approx(
        [v for f, v in noisy.items() if "fileid_1" in f][0], abs=1e-3
    )
    groups.write_text("fileid,noise_type\n0,music\n")  # a file with no group: one clear error
    with pytest.raises(fsnet.errors.FsnetError, match="no fileid listed"):
        peer_quality.main(argv)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-files", "0"], "--max-files must be at least 1"),
        (["--max-files", "-1"], "--max-files must be at least 1"),
        (["--delay-files", "0"], "--delay-files must be at least 1"),
        (["--metrics", "bogus"], "bogus"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, extra, message):
    _pairs(tmp_path / "set", np.random.default_rng(2))
    with pytest.raises(fsnet.errors.FsnetError, match=message):
        peer_quality.main(["--testset", str(tmp_path / "set"), "--workers", "0", *extra])
