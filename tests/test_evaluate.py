"""evaluate.py: test-set discovery, the CLI end to end, one-line errors, atomic outputs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL_CONFIG
from omegaconf import OmegaConf
from test_metrics import speech_like  # sibling test module

import fsnet
from fsnet.checkpoint import save_release
from fsnet.errors import FsnetError
from fsnet.evaluation import evaluate, report
from fsnet.evaluation import options as eo
from fsnet.evaluation import testset as ts

REPO = Path(__file__).resolve().parent.parent
SR = 16000
# 2.3 s: speechmos tiles it to 9.2 s, i.e. exactly one DNSMOS window (2 s would be tiled to 16 s
# and scored on 7 windows), which keeps the DNSMOS part of these tests fast.
SECONDS = 2.3
TINY = TINY_MODEL_CONFIG


def make_dns_set(root: Path, n: int = 3, seconds: float = SECONDS) -> Path:
    """clean/clean_fileid_N.wav + noisy/noisy_snrS_fileid_N.wav, speech-like + white noise."""
    rng = np.random.default_rng(0)
    (root / "clean").mkdir(parents=True)
    (root / "noisy").mkdir()
    for i in range(n):
        snr = 5 * i
        clean = speech_like(seconds, seed=i)
        noise = rng.standard_normal(clean.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr / 10))
        sf.write(root / "clean" / f"clean_fileid_{i}.wav", clean, SR, subtype="PCM_16")
        sf.write(
            root / "noisy" / f"noisy_snr{snr}_fileid_{i}.wav", clean + noise, SR, subtype="PCM_16"
        )
    return root


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_release(fsnet.build_model(TINY), path)
    return path


@pytest.fixture(scope="module")
def dns_set(tmp_path_factory) -> Path:
    return make_dns_set(tmp_path_factory.mktemp("dns") / "set")


def run_cli(*overrides: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "evaluate.py", "progress=false", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ test-set layouts


def test_default_testset_is_relative_to_the_package():
    assert (
        ts.DEFAULT_TESTSET
        == Path(fsnet.__file__).resolve().parent.parent / "assets" / "demo_testset"
    )
    assert (eo.CONFIG_DIR / "evaluate.yaml").is_file()


def test_scan_layouts(tmp_path):
    d = tmp_path / "dns"
    for sub, names in {
        "clean": ["clean_fileid_10.wav", "clean_fileid_2.wav"],
        "noisy": ["book_snr3_fileid_2.wav", "x_snr0_fileid_10.wav", "notes.txt"],
    }.items():
        (d / sub).mkdir(parents=True)
        for name in names:
            (d / sub / name).write_bytes(b"")
    items, layout, notices = ts.scan_testset(d)
    assert layout == "paired" and not notices
    assert [(i.noisy.name, i.clean.name) for i in items] == [
        ("book_snr3_fileid_2.wav", "clean_fileid_2.wav"),
        ("x_snr0_fileid_10.wav", "clean_fileid_10.wav"),
    ]
    # VoiceBank-DEMAND style: identical names pair.
    vb = tmp_path / "vb"
    for sub in ("clean", "noisy"):
        (vb / sub).mkdir(parents=True)
        (vb / sub / "p232_001.wav").write_bytes(b"")
    assert ts.scan_testset(vb)[0][0].clean.name == "p232_001.wav"
    # Noisy only: files in the directory itself, or in noisy/ without clean/.
    real = tmp_path / "real"
    real.mkdir()
    (real / "b.flac").write_bytes(b"")
    (real / "a.wav").write_bytes(b"")
    items, layout, _ = ts.scan_testset(real)
    assert layout == "noisy_only" and [i.name for i in items] == ["a.wav", "b.flac"]
    assert all(i.clean is None for i in items)
    only_noisy = tmp_path / "only_noisy"
    (only_noisy / "noisy").mkdir(parents=True)
    (only_noisy / "noisy" / "rec.wav").write_bytes(b"")
    assert ts.scan_testset(only_noisy)[1] == "noisy_only"


def test_scan_errors(tmp_path):
    with pytest.raises(FsnetError, match="not found"):
        ts.scan_testset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FsnetError, match="no audio files"):
        ts.scan_testset(tmp_path / "empty")
    d = tmp_path / "unpaired"
    (d / "clean").mkdir(parents=True)
    (d / "noisy").mkdir()
    for i in range(8):
        (d / "noisy" / f"n_fileid_{i}.wav").write_bytes(b"")
    (d / "clean" / "clean_fileid_0.wav").write_bytes(b"")
    (d / "clean" / "clean_fileid_99.wav").write_bytes(b"")
    with pytest.raises(FsnetError) as info:
        ts.scan_testset(d)
    msg = str(info.value)
    assert "7 noisy file(s) without a clean reference: n_fileid_1.wav" in msg
    assert "(and 2 more)" in msg and "clean_fileid_99.wav" in msg and "allow_unpaired" in msg
    items, _, notices = ts.scan_testset(d, allow_unpaired=True)
    assert [i.key for i in items] == ["fileid_0"] and "skipped" in notices[0]
    (d / "noisy" / "other_fileid_0.wav").write_bytes(b"")
    with pytest.raises(FsnetError, match="share the pairing key fileid_0"):
        ts.scan_testset(d, allow_unpaired=True)
    # Paired layout: noisy files that would share an output name share a pairing key -> rejected.
    vb = tmp_path / "vb_dup"
    for sub in ("clean", "noisy"):
        (vb / sub).mkdir(parents=True)
    for name in ("clean/a.wav", "noisy/a.wav", "noisy/a.opus"):
        (vb / name).write_bytes(b"")
    with pytest.raises(FsnetError, match="share the pairing key a: a.opus, a.wav"):
        ts.scan_testset(vb)


def test_scan_folder_of_test_sets(tmp_path):
    # DNS test_set/synthetic: no audio of its own, sub-folders that are test sets (sorted by name,
    # the same fileids in each); other sub-folders are ignored with a notice, hidden ones silently.
    root = tmp_path / "synthetic"
    for sub in ("with_reverb", "no_reverb"):
        for kind, name in (("clean", "clean_fileid_0.wav"), ("noisy", "n_snr5_fileid_0.wav")):
            (root / sub / kind).mkdir(parents=True)
            (root / sub / kind / name).write_bytes(b"")
    (root / "docs").mkdir()
    (root / "docs" / "README.txt").write_text("x")
    (root / ".cache").mkdir()
    (root / "notes.txt").write_text("x")
    items, layout, notices = ts.scan_testset(root)
    assert layout == "paired"
    assert [(i.subset, i.key, i.clean.name) for i in items] == [
        ("no_reverb", "fileid_0", "clean_fileid_0.wav"),
        ("with_reverb", "fileid_0", "clean_fileid_0.wav"),
    ]
    assert items[0].noisy == root / "no_reverb" / "noisy" / "n_snr5_fileid_0.wav"
    assert len(notices) == 1 and "docs/" in notices[0] and "ignored" in notices[0]
    # Outputs of a subset go to its own folder, so repeated fileids never collide.
    assert ts.output_names(items, "enhanced") == (
        ["no_reverb/n_snr5_fileid_0.wav", "with_reverb/n_snr5_fileid_0.wav"],
        [],
    )
    assert ts.output_names(items, "plots")[0][1] == "with_reverb/n_snr5_fileid_0.png"
    # A broken subset is an error (not skipped), naming its files; allow_unpaired applies to it.
    (root / "with_reverb" / "noisy" / "n_snr0_fileid_9.wav").write_bytes(b"")
    with pytest.raises(FsnetError, match="unpaired files in .*with_reverb: 1 noisy file"):
        ts.scan_testset(root)
    items, _, notices = ts.scan_testset(root, allow_unpaired=True)
    assert len(items) == 2 and any("skipped" in n for n in notices)
    # Subsets of different layouts are not averaged together.
    (root / "real").mkdir()
    (root / "real" / "rec.wav").write_bytes(b"")
    with pytest.raises(FsnetError, match=r"mix clean\+noisy pairs \(no_reverb, with_reverb\) and "):
        ts.scan_testset(root, allow_unpaired=True)
    # Noisy-only subsets; only one level of nesting is searched.
    real = tmp_path / "real_recordings"
    for sub in ("b", "a"):
        (real / sub).mkdir(parents=True)
        (real / sub / "rec.flac").write_bytes(b"")
    (real / "deeper" / "set" / "noisy").mkdir(parents=True)
    (real / "deeper" / "set" / "noisy" / "x.wav").write_bytes(b"")
    items, layout, notices = ts.scan_testset(real)
    assert layout == "noisy_only" and [i.where(i.name) for i in items] == [
        "a/rec.flac",
        "b/rec.flac",
    ]
    assert len(notices) == 1 and "deeper/" in notices[0]
    # Neither audio nor test-set sub-folders: today's error, plus the sub-folders looked at.
    none = tmp_path / "none"
    (none / "b" / "noisy").mkdir(parents=True)
    (none / "a").mkdir()
    (none / "a" / "notes.txt").write_text("x")
    with pytest.raises(FsnetError) as info:
        ts.scan_testset(none)
    assert str(info.value) == (
        f"no audio files (.wav/.flac/.ogg/.opus) in {none}, and none of its sub-folders (a, b) "
        "is a test set"
    )


def test_options_validation():
    with pytest.raises(FsnetError, match="unknown evaluate option"):
        evaluate({"bogus": 1})
    with pytest.raises(FsnetError, match="mode must be one of"):
        evaluate({"mode": "live"})
    with pytest.raises(FsnetError, match="unknown metric"):
        evaluate({"metrics": ["mosnet"]})


def test_options_reject_nonsense_values():
    bad = {
        "save_enhanced": "no",
        "allow_unpaired": "maybe",
        "progress": "nah",
        "diff_tolerance": -1,
        "metrics": 5,
    }
    for key, value in bad.items():
        with pytest.raises(FsnetError, match=f"^{key} must be "):
            eo.parse_options({key: value})
    for key, value in {
        "diff_tolerance": math.nan,
        "stream_block_samples": 0,
        "num_threads": -1,
        "num_workers": -2,
        "plot": 1.5,
        "save_enhanced": 1,
        "metrics": [["pesq_wb"]],
        "testset": ["a"],
    }.items():
        with pytest.raises(FsnetError, match=f"^{key} must be "):
            eo.parse_options({key: value})
    # Accepted: true/false as booleans or (quoted on the command line) as text; 0 tolerance.
    opts = eo.parse_options({"save_enhanced": "TRUE", "progress": False, "diff_tolerance": 0})
    assert opts.save_enhanced is True and opts.progress is False and opts.diff_tolerance == 0


def test_mask_shaping_options():
    assert eo.parse_options({}).shaping == fsnet.MaskShaping()  # off by default
    opts = eo.parse_options({"postfilter": 0.3, "atten_lim_db": 12})
    assert opts.shaping == fsnet.MaskShaping(postfilter=0.3, atten_lim_db=12.0)
    for key, value in [
        ("postfilter", -1),
        ("postfilter", math.nan),
        ("postfilter", "strong"),
        ("atten_lim_db", 0),
        ("atten_lim_db", math.inf),
    ]:
        with pytest.raises(FsnetError, match=f"^{key} must be "):
            eo.parse_options({key: value})
    with pytest.raises(FsnetError, match="^postfilter must be .*; atten_lim_db must be "):
        eo.parse_options({"postfilter": -1, "atten_lim_db": -3})


def test_mask_shaping_reaches_both_modes(tmp_path, tiny_ckpt):
    testset = make_dns_set(tmp_path / "set", n=2, seconds=1.0)
    shaping = fsnet.MaskShaping(postfilter=0.5, atten_lim_db=12)
    summary = evaluate(
        {
            "checkpoint": str(tiny_ckpt),
            "testset": str(testset),
            "mode": "both",
            "postfilter": 0.5,
            "atten_lim_db": 12,
            "metrics": ["si_sdr"],
            "num_workers": 0,
            "save_enhanced": True,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        }
    )
    assert summary["mask_shaping"] == {"postfilter": 0.5, "atten_lim_db": 12.0}
    assert summary["max_abs_sample_diff"] <= 1e-5 and summary["streaming_matches_offline"]
    assert (
        "postfilter 0.5, attenuation limit 12 dB)" in (tmp_path / "out" / "summary.md").read_text()
    )
    model = fsnet.load_model(tiny_ckpt)
    for noisy in sorted((testset / "noisy").iterdir()):
        x, _ = sf.read(noisy, dtype="float32")
        saved, _ = sf.read(tmp_path / "out" / "enhanced_offline" / noisy.name, dtype="float32")
        expected = fsnet.enhance(model, x, shaping=shaping)
        np.testing.assert_allclose(saved, expected, atol=2 / 32768)  # written as PCM_16
        assert np.abs(saved - fsnet.enhance(model, x)).max() > 1e-3


def test_numeric_path_values_are_paths(tmp_path, monkeypatch):
    # Hydra reads testset=2024 as an int and output_dir=2024.10 as the float 2024.1: the path is
    # the text that was typed, so a folder named 2024 or 2024.10 just works.
    monkeypatch.chdir(tmp_path)
    opts = eo.parse_options({"testset": 2024, "checkpoint": 5, "output_dir": 7})
    assert opts.testset == tmp_path / "2024" and opts.checkpoint == str(tmp_path / "5")
    assert opts.output_dir == Path("7")
    raw = eo.raw_overrides(["output_dir=2024.10", "++testset= 007 ", "mode=both"])
    assert raw == {"output_dir": "2024.10", "testset": "007", "mode": "both"}
    assert eo.path_text("output_dir", 2024.1, raw) == "2024.10"
    assert eo.path_text("checkpoint", 5, raw) == "5"
    root = OmegaConf.create({"hydra": {"overrides": {"task": ["output_dir=2024.10"]}}})
    assert eo.first_set(2024.1, "default", _root_=root) == "2024.10"
    assert eo.first_set(None, "default", _root_=root) == "default"
    assert eo.first_set("~/x", "default") == str(Path.home() / "x")
    (tmp_path / "file.wav").write_bytes(b"")
    for bad in ("file.wav", "file.wav/sub"):
        with pytest.raises(FsnetError, match=f"output_dir {bad} is not a directory"):
            eo.first_set(bad, "default")


def test_output_names_stay_distinct():
    def items(*names):
        return [ts.Item(Path(n).stem, Path("/set") / n) for n in names]

    enh, notices = ts.output_names(items("a.wav", "a.opus", "b.opus", "c.flac"), "enhanced")
    assert enh == ["a.wav", "a.opus.wav", "b.wav", "c.flac"]
    assert notices == [
        "a.wav, a.opus would share the output name a.wav; enhanced audio saved as a.wav, a.opus.wav"
    ]
    plots, _ = ts.output_names(items("a.flac", "a.wav", "b.wav"), "plots")
    assert plots == ["a.flac.png", "a.wav.png", "b.png"]
    assert ts.output_names(items("a.flac", "a.wav"), "enhanced") == (["a.flac", "a.wav"], [])
    with pytest.raises(FsnetError, match="a.opus and a.opus.wav would both be saved"):
        ts.output_names(items("a.opus", "a.opus.wav", "a.wav"), "enhanced")


def test_noisy_only_files_sharing_a_stem_keep_both_outputs(tmp_path, tiny_ckpt):
    real = tmp_path / "real"
    real.mkdir()
    x = speech_like(1.0)
    sf.write(real / "a.wav", x, SR, subtype="PCM_16")
    sf.write(real / "a.opus", 0.5 * x, SR, format="OGG", subtype="OPUS")
    out = tmp_path / "out"
    summary = evaluate(
        {
            "checkpoint": str(tiny_ckpt),
            "testset": str(real),
            "metrics": ["dnsmos"],
            "num_workers": 0,
            "save_enhanced": True,
            "plot": 2,
            "output_dir": str(out),
            "progress": False,
        }
    )
    assert sorted(p.name for p in (out / "enhanced_offline").iterdir()) == [
        "a.opus.wav",
        "a.wav",
    ]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["a.opus.png", "a.wav.png"]
    assert sorted(Path(p).name for p in summary["files"]["plots"]) == ["a.opus.png", "a.wav.png"]
    assert any("a.opus.wav" in n for n in summary["notices"])
    # The two enhanced files are the two different inputs (the opus one is half as loud).
    y_wav, _ = sf.read(out / "enhanced_offline" / "a.wav")
    y_opus, _ = sf.read(out / "enhanced_offline" / "a.opus.wav")
    assert np.std(y_opus) < 0.8 * np.std(y_wav)


# ----------------------------------------------------------------------------------------- CLI


def test_cli_both_modes_agree(tmp_path, tiny_ckpt, dns_set):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    proc = run_cli(
        f"checkpoint={tiny_ckpt}",
        f"testset={dns_set}",
        "mode=both",
        "plot=1",
        "save_enhanced=true",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t0 < 90
    # stdout: the Markdown tables, one per mode plus the agreement table.
    for heading in ("### offline: RTF", "### streaming: RTF", "### offline vs streaming: agree"):
        assert heading in proc.stdout
    assert "| metric | noisy | enhanced | improvement |" in proc.stdout
    assert "| WB-PESQ |" in proc.stdout and "| DNSMOS P.808 |" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_files"] == 3 and summary["layout"] == "paired"
    assert "subsets" not in summary and "all subsets" not in proc.stdout
    assert summary["device"] == "cpu" and summary["num_threads"] == 1
    assert set(summary["rtf"]) == {"offline", "streaming"} and all(
        v > 0 for v in summary["rtf"].values()
    )
    for mode in ("offline", "streaming"):
        table = summary["results"][mode]
        assert list(table) == list(fsnet.metrics.ALL_METRICS)
        for name, r in table.items():
            assert r["num_files"] == 3, name
            assert r["improvement"] == pytest.approx(r["enhanced"] - r["noisy"], abs=1e-9)
    assert summary["streaming_matches_offline"] is True
    assert all(d < 1e-3 for d in summary["max_abs_diff"].values()), summary["max_abs_diff"]

    with open(out / "per_file.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["file", "clean", "duration_s", "noisy_pesq_wb"]
    assert [r["file"] for r in rows] == [f"noisy_snr{5 * i}_fileid_{i}.wav" for i in range(3)]
    for row in rows:
        for name in fsnet.metrics.ALL_METRICS:
            a, b = float(row[f"offline_{name}"]), float(row[f"streaming_{name}"])
            assert math.isfinite(a) and abs(a - b) < 1e-3, (name, a, b)
        assert float(row["noisy_pesq_wb"]) >= 1.0 and -10 < float(row["noisy_si_sdr"]) < 15

    for mode in ("offline", "streaming"):
        written = sorted(p.name for p in (out / f"enhanced_{mode}").iterdir())
        assert written == sorted(r["file"] for r in rows)
        info = sf.info(out / f"enhanced_{mode}" / written[0])
        assert info.samplerate == SR and info.frames == int(SECONDS * SR)
    pngs = list((out / "plots").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert (out / "summary.md").read_text().startswith("## fsnet evaluation")


def test_cli_folder_of_test_sets(tmp_path, tiny_ckpt):
    # testset=.../synthetic holding no_reverb/ and with_reverb/ (same fileids in both).
    root = tmp_path / "synthetic"
    make_dns_set(root / "with_reverb", n=3, seconds=1.0)
    make_dns_set(root / "no_reverb", n=2, seconds=1.0)
    (root / "no_reverb" / "clean" / "clean_fileid_1.wav").unlink()  # skipped: allow_unpaired
    (root / "logs").mkdir()
    out = tmp_path / "run"
    proc = run_cli(
        f"checkpoint={tiny_ckpt}",
        f"testset={root}",
        "mode=both",
        "metrics=[si_sdr,stoi]",
        "num_workers=0",
        "allow_unpaired=true",
        "save_enhanced=true",
        "plot=1",
        f"output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "notice: sub-folder logs/ is not a test set" in proc.stderr
    # One table per subset and mode, one over all files per mode, one agreement table.
    for heading in (
        "### no_reverb (1 file(s), 1.0 s), offline: RTF",
        "### no_reverb (1 file(s), 1.0 s), streaming: RTF",
        "### with_reverb (3 file(s), 3.0 s), offline: RTF",
        "### all subsets (4 file(s), 4.0 s), streaming: RTF",
        "### offline vs streaming, all subsets: agree",
    ):
        assert heading in proc.stdout, heading
    assert proc.stdout.count("| metric | noisy | enhanced | improvement |") == 6
    assert proc.stdout.index("### no_reverb") < proc.stdout.index("### with_reverb")
    assert "(2 subsets: no_reverb, with_reverb)" in proc.stdout.splitlines()[0]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_files"] == 4 and summary["layout"] == "paired"
    assert list(summary["subsets"]) == ["no_reverb", "with_reverb"]
    parts = summary["subsets"]
    assert [p["num_files"] for p in parts.values()] == [1, 3]
    assert parts["with_reverb"]["testset"] == str(root / "with_reverb")
    assert summary["streaming_matches_offline"] is True
    assert all(p["streaming_matches_offline"] for p in parts.values())
    with open(out / "per_file.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["subset", "file", "clean"]
    assert [(r["subset"], r["file"]) for r in rows] == [
        ("no_reverb", "noisy_snr0_fileid_0.wav"),
        *[("with_reverb", f"noisy_snr{5 * i}_fileid_{i}.wav") for i in range(3)],
    ]
    # The existing keys are about all files; the subsets' means are over their own files.
    for mode in ("offline", "streaming"):
        for name in ("si_sdr", "stoi"):
            for key, files in (
                ("", rows),
                *((k, [r for r in rows if r["subset"] == k]) for k in parts),
            ):
                part = parts[key] if key else summary
                r = part["results"][mode][name]
                assert r["num_files"] == len(files)
                assert r["enhanced"] == pytest.approx(
                    np.mean([float(f[f"{mode}_{name}"]) for f in files]), rel=1e-5, abs=1e-5
                )
    assert summary["audio_seconds"] == pytest.approx(
        sum(p["audio_seconds"] for p in parts.values())
    )
    # Enhanced audio and plots per subset: fileid_0 of both subsets is kept.
    for mode in ("offline", "streaming"):
        written = (out / f"enhanced_{mode}").rglob("*.wav")
        assert sorted(str(p.relative_to(out / f"enhanced_{mode}")) for p in written) == sorted(
            f"{r['subset']}/{r['file']}" for r in rows
        )
    assert sorted(str(p.relative_to(out / "plots")) for p in (out / "plots").rglob("*.png")) == [
        "no_reverb/noisy_snr0_fileid_0.png",
        "with_reverb/noisy_snr0_fileid_0.png",
    ]
    # A disagreement names the subsets it is in.
    summary["subsets"]["with_reverb"]["streaming_matches_offline"] = False
    summary["streaming_matches_offline"] = False
    assert (
        "### offline vs streaming, all subsets: DISAGREE in with_reverb ("
        in report.format_tables(summary)
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_cli_errors_are_one_line(tmp_path, tiny_ckpt, dns_set):
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    line = _one_error_line(
        run_cli(f"testset={tmp_path / 'missing'}", f"checkpoint={tiny_ckpt}", run_dir)
    )
    assert "not found" in line and "missing" in line

    unpaired = make_dns_set(tmp_path / "unpaired", n=2, seconds=0.5)
    (unpaired / "noisy" / "noisy_snr0_fileid_7.wav").write_bytes(
        (unpaired / "noisy" / "noisy_snr0_fileid_0.wav").read_bytes()
    )
    line = _one_error_line(run_cli(f"testset={unpaired}", f"checkpoint={tiny_ckpt}", run_dir))
    assert "noisy_snr0_fileid_7.wav" in line and "allow_unpaired" in line

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    line = _one_error_line(run_cli(f"testset={dns_set}", f"checkpoint={bad}", run_dir))
    assert "broken.pt" in line

    # an 8 kHz model would be fed the 16 kHz test set and scored as if nothing were wrong
    rate8k = save_release(fsnet.build_model({**TINY, "sample_rate": 8000}), tmp_path / "8k.pt")
    line = _one_error_line(run_cli(f"testset={dns_set}", f"checkpoint={rate8k}", run_dir))
    assert "is a 8000 Hz model; evaluate.py scores 16000 Hz models" in line

    # testset=$UNSET_VARIABLE used to score the demo set as if it were the folder meant
    line = _one_error_line(run_cli("testset=", f"checkpoint={tiny_ckpt}", run_dir))
    assert "testset= is empty" in line
    assert "checkpoint= is empty" in _one_error_line(run_cli(f"testset={dns_set}", "checkpoint="))

    # Hydra's own errors (unknown key, bad override syntax) are one line too.
    assert "nosuchkey" in _one_error_line(run_cli("nosuchkey=1", run_dir))
    _one_error_line(run_cli("metrics=[si_sdr", run_dir))


def test_cli_bad_mask_shaping_is_one_line(tmp_path, tiny_ckpt, dns_set):
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    line = _one_error_line(
        run_cli(
            f"testset={dns_set}",
            f"checkpoint={tiny_ckpt}",
            "postfilter=-1",
            "atten_lim_db=inf",
            run_dir,
        )
    )
    assert "postfilter must be a finite number >= 0" in line
    assert "atten_lim_db must be a finite number of dB > 0" in line


def test_cli_bad_values_are_one_line_and_logged(tmp_path, tiny_ckpt, dns_set):
    def cli(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "evaluate.py"), "progress=false", *overrides],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Numbers where a path is expected: a directory named 2024 / 2024.10 is used as such.
    shutil.copytree(dns_set, tmp_path / "2024")
    proc = cli(
        "testset=2024",
        "output_dir=2024.10",
        f"checkpoint={tiny_ckpt}",
        "metrics=[si_sdr]",
        "num_workers=0",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "2024.10" / "summary.json").read_text())
    assert summary["testset"] == str(tmp_path / "2024") and summary["num_files"] == 3
    assert (tmp_path / "2024.10" / ".hydra").is_dir() and not (tmp_path / "2024.1").exists()
    line = _one_error_line(cli("testset=2024", "checkpoint=5", "output_dir=run5"))
    assert line == f"error: checkpoint not found: {tmp_path / '5'}"
    # A refused run (nothing written yet) leaves no run folder: no evaluate.log, no .hydra/.
    assert not (tmp_path / "run5").exists()
    line = _one_error_line(cli("testset=123", "output_dir=run123"))
    assert "test set directory not found" in line and "123" in line
    assert not (tmp_path / "run123").exists()
    # A run that fails after writing files leaves its one-line error in <output_dir>/evaluate.log
    # too (printed once): the second file of this set is not audio.
    broken = tmp_path / "broken_set"
    shutil.copytree(dns_set, broken)
    (broken / "noisy" / "noisy_snr5_fileid_1.wav").write_bytes(b"RIFF not really a wav")
    line = _one_error_line(
        cli(f"testset={broken}", f"checkpoint={tiny_ckpt}", "save_enhanced=true", "output_dir=runb")
    )
    assert "noisy_snr5_fileid_1.wav" in line
    assert (tmp_path / "runb" / "enhanced_offline" / "noisy_snr0_fileid_0.wav").is_file()
    assert line in (tmp_path / "runb" / "evaluate.log").read_text()
    assert "metrics must be a list of metric names" in _one_error_line(
        cli("metrics=5", "output_dir=run")
    )
    assert "save_enhanced must be true or false, got 'no'" in _one_error_line(
        cli("save_enhanced=no", "output_dir=run")
    )
    # output_dir is an existing file (or below one): named, not "[Errno 17] File exists".
    (tmp_path / "in16.wav").write_bytes(b"")
    assert _one_error_line(cli("output_dir=in16.wav")) == (
        "error: output_dir in16.wav is not a directory"
    )


def test_cli_resamples_8khz_with_notice(tmp_path, tiny_ckpt):
    root = make_dns_set(tmp_path / "set8k", n=2, seconds=1.0)
    path = root / "noisy" / "noisy_snr5_fileid_1.wav"
    x, _ = sf.read(path, dtype="float32")
    sf.write(path, x[::2], 8000, subtype="PCM_16")
    out = tmp_path / "out"
    proc = run_cli(
        f"checkpoint={tiny_ckpt}",
        f"testset={root}",
        "metrics=[si_sdr,stoi]",
        "num_workers=0",
        f"output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "notice: noisy/noisy_snr5_fileid_1.wav: resampled from 8000 Hz to 16000 Hz" in proc.stderr
    )
    summary = json.loads((out / "summary.json").read_text())
    assert any("resampled" in n for n in summary["notices"])
    assert (out / ".hydra").is_dir()  # output_dir is also the Hydra run directory
    assert "| SI-SDR (dB) |" in proc.stdout and "PESQ" not in proc.stdout


def test_noisy_only_set_gets_dnsmos_alone(tmp_path, tiny_ckpt, dns_set):
    real = tmp_path / "real"
    real.mkdir()
    src = dns_set / "noisy" / "noisy_snr5_fileid_1.wav"
    (real / "recording.wav").write_bytes(src.read_bytes())
    summary = evaluate(
        {
            "checkpoint": str(tiny_ckpt),
            "testset": str(real),
            "mode": "streaming",
            "num_workers": 0,
            "output_dir": str(tmp_path / "out"),
            "progress": False,
        }
    )
    assert summary["layout"] == "noisy_only"
    table = summary["results"]["streaming"]
    assert list(table) == list(fsnet.metrics.DNSMOS_METRICS)
    for r in table.values():
        assert 1.0 <= r["noisy"] <= 5.0 and 1.0 <= r["enhanced"] <= 5.0
    assert any("DNSMOS only" in n for n in summary["notices"])


def test_interrupt_leaves_only_complete_wavs(tmp_path, tiny_ckpt, dns_set):
    # Many noisy-only files enhanced in streaming mode (slowest path): SIGTERM while writing.
    real = tmp_path / "many"
    real.mkdir()
    data = (dns_set / "noisy" / "noisy_snr0_fileid_0.wav").read_bytes()
    for i in range(80):
        (real / f"rec_{i:03d}.wav").write_bytes(data)
    out = tmp_path / "out"
    enhanced = out / "enhanced_streaming"
    proc = subprocess.Popen(
        [
            sys.executable,
            "evaluate.py",
            "progress=false",
            f"checkpoint={tiny_ckpt}",
            f"testset={real}",
            "mode=streaming",
            "save_enhanced=true",
            f"output_dir={out}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if enhanced.is_dir() and any(p.suffix == ".wav" for p in enhanced.iterdir()):
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The SIGTERM handler is installed before the first file is written, and 80 files take far
    # longer than one to enhance and score, so the run is always cut short.
    assert proc.returncode == 143, stderr  # 128 + SIGTERM
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert "Traceback" not in stderr
    leftovers = sorted(os.listdir(enhanced))
    assert leftovers and all(name.endswith(".wav") for name in leftovers), leftovers
    for name in leftovers:
        info = sf.info(enhanced / name)
        assert info.frames == int(SECONDS * SR) and info.samplerate == SR
