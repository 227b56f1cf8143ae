"""evaluate.py under hostile conditions (issue 24): a SIGINT to the process alone while metric
workers score, a model whose output is NaN, runs refused before they wrote anything; and the
pairing rule evaluation shares with training (fsnet.audio.fileid)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL_CONFIG
from test_evaluate import make_dns_set

import fsnet
import fsnet.audio
import fsnet.checkpoint
import fsnet.evaluation
from fsnet.checkpoint import save_release
from fsnet.errors import FsnetError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_release(fsnet.build_model(TINY_MODEL_CONFIG), path)
    return path


def nan_model() -> fsnet.FastFullSubNet:
    """A model with one NaN weight: every output sample is NaN."""
    model = fsnet.build_model(TINY_MODEL_CONFIG)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    return model


def cli(*overrides: str, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "progress=false", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc for the workers")
def test_sigint_to_the_process_alone_stops_scoring_within_seconds(tmp_path, tiny_release):
    # `kill -INT <pid>` (not the group, as a terminal's Ctrl-C is): the metric workers ignore
    # SIGINT, and DNSMOS on 30 s takes several seconds per signal. The run used to wait for every
    # task already handed to a worker (60-75 s on the demo set) before it exited.
    testset = make_dns_set(tmp_path / "set", n=2, seconds=30.0)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "evaluate.py",
            f"checkpoint={tiny_release}",
            f"testset={testset}",
            "metrics=[dnsmos]",
            "num_workers=2",
            "save_enhanced=true",
            f"output_dir={out}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        while "metrics:" not in seen:  # the progress bar of the scoring step
            char = proc.stderr.read(1)
            assert char, f"evaluate.py ended before scoring: {proc.wait()} {seen}"
            seen += char
        time.sleep(2.0)  # the workers start (spawn) and pick up their first tasks
        workers = _children(proc.pid)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = seen + rest
    assert proc.returncode == 130, stderr
    assert elapsed < 8.0, f"exited {elapsed:.1f} s after SIGINT"
    assert stderr.strip().splitlines()[-1] == (
        "error: interrupted; only complete files were written"
    )
    assert "Traceback" not in stderr
    assert not (out / "summary.json").exists() and not (out / "per_file.csv").exists()
    written = sorted(p.name for p in (out / "enhanced_offline").iterdir())
    assert written == sorted(p.name for p in (testset / "noisy").iterdir())  # all complete
    deadline = time.monotonic() + 10
    while workers and time.monotonic() < deadline:  # killed workers are reaped by init
        workers = {pid for pid in workers if Path(f"/proc/{pid}").exists()}
        time.sleep(0.1)
    assert not workers, f"worker processes left running: {workers}"


def test_nan_model_output_is_refused_not_written(tmp_path, monkeypatch):
    # Loading may refuse NaN weights already; the output check must hold without that.
    monkeypatch.setattr(fsnet.checkpoint, "load_model", lambda *a, **k: nan_model())
    testset = make_dns_set(tmp_path / "set", n=2, seconds=1.0)
    out = tmp_path / "out"
    for mode in ("offline", "streaming"):
        with pytest.raises(FsnetError, match=r"noisy_snr0_fileid_0\.wav: the model's .*non-finite"):
            fsnet.evaluation.evaluate(
                {
                    "testset": str(testset),
                    "mode": mode,
                    "metrics": ["si_sdr"],
                    "num_workers": 0,
                    "save_enhanced": True,
                    "output_dir": str(out),
                    "progress": False,
                }
            )
        assert not (out / f"enhanced_{mode}").exists()


def test_nan_release_gives_one_line_and_no_audio(tmp_path):
    # `evaluate.py save_enhanced=true` with NaN weights used to exit 0 with files of -32768.
    path = save_release(nan_model(), tmp_path / "nan.pt")
    testset = make_dns_set(tmp_path / "set", n=1, seconds=1.0)
    out = tmp_path / "out"
    line = one_error_line(
        cli(
            f"checkpoint={path}",
            f"testset={testset}",
            "metrics=[si_sdr]",
            "num_workers=0",
            "save_enhanced=true",
            f"output_dir={out}",
        )
    )
    assert re.search("non-finite|nan", line, re.IGNORECASE), line
    assert not list(out.rglob("*.wav")) if out.exists() else True


def test_refused_runs_leave_no_run_folder(tmp_path, tiny_release):
    # Default run folder (outputs/evaluate/<date>/<time> under the current directory).
    line = one_error_line(cli(f"testset={tmp_path / 'missing'}", cwd=tmp_path))
    assert "test set directory not found" in line
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    testset = make_dns_set(tmp_path / "set", n=1, seconds=1.0)
    assert "broken.pt" in one_error_line(
        cli(f"testset={testset}", f"checkpoint={bad}", cwd=tmp_path)
    )
    assert not (tmp_path / "outputs").exists(), sorted((tmp_path / "outputs").rglob("*"))
    # Hydra's own refusals (an unknown key) never create it either.
    assert "nosuchkey" in one_error_line(cli("nosuchkey=1", cwd=tmp_path))
    assert not (tmp_path / "outputs").exists()
    # An output_dir that existed before keeps what it held (a previous run's log included).
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / "evaluate.log").write_text("an earlier run\n")
    one_error_line(cli(f"testset={tmp_path / 'missing'}", f"output_dir={mine}"))
    assert (mine / "notes.txt").read_text() == "keep"
    assert (mine / "evaluate.log").read_text().startswith("an earlier run\n")


def test_evaluation_pairs_through_the_one_fileid_rule(tmp_path, monkeypatch):
    # Training's validation pairing and the recipes call fsnet.audio.fileid; evaluation must too
    # (it had a regex of its own). Every file is keyed through it, and a changed rule shows.
    from fsnet.evaluation import testset as ts

    names = {
        "clean": ["clean_fileid_7.wav", "clean_fileid_10.wav", "p232_001.wav"],
        "noisy": ["book_snr3_fileid_007.wav", "x_fileid_10.wav", "p232_001.wav"],
    }
    for sub, files in names.items():
        (tmp_path / sub).mkdir()
        for name in files:
            (tmp_path / sub / name).write_bytes(b"")
    for path in (tmp_path / "noisy").iterdir():
        number = fsnet.audio.fileid(path)
        assert ts.pair_key(path) == (f"fileid_{number}" if number is not None else path.stem)
    items, _, _ = ts.scan_testset(tmp_path)
    assert {(i.noisy.name, i.clean.name) for i in items} == {
        ("book_snr3_fileid_007.wav", "clean_fileid_7.wav"),
        ("x_fileid_10.wav", "clean_fileid_10.wav"),
        ("p232_001.wav", "p232_001.wav"),
    }
    asked: list[str] = []
    real = fsnet.audio.fileid

    def spy(path):
        asked.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fsnet.audio, "fileid", spy)
    ts.scan_testset(tmp_path)
    assert sorted(asked) == sorted(names["clean"] + names["noisy"])
