"""Bad input through the real CLI: one clear line and a non-zero exit, or a correct file with a
notice. Never a traceback, a hang, or a silently wrong file. Rows of docs/reliability.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_MODEL_CONFIG

import fsnet
from fsnet.audio import load_audio
from fsnet.checkpoint import save_release

REPO = Path(__file__).resolve().parents[1]
TINY = TINY_MODEL_CONFIG


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> Path:
    return save_release(fsnet.build_model(TINY), tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def run(args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "stream_infer.py", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def speech_like(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    x += 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


GOOD_CASES = {
    # name: (writer, expected notice word or None)
    "8kHz": (lambda p: sf.write(p, speech_like(1.0, 8000), 8000), "resampled"),
    "22.05kHz": (lambda p: sf.write(p, speech_like(1.0, 22050), 22050), "resampled"),
    "44.1kHz": (lambda p: sf.write(p, speech_like(1.0, 44100), 44100), "resampled"),
    "48kHz-stereo": (lambda p: sf.write(p, speech_like(1.0, 48000, 2), 48000), "mono"),
    "6-channels": (lambda p: sf.write(p, speech_like(1.0, 16000, 6), 16000), "mono"),
    "24-bit": (lambda p: sf.write(p, speech_like(1.0, 16000), 16000, subtype="PCM_24"), None),
    "float": (lambda p: sf.write(p, speech_like(1.0, 16000), 16000, subtype="FLOAT"), None),
    "flac": (lambda p: sf.write(p.with_suffix(".flac"), speech_like(1.0, 16000), 16000), None),
    "shorter-than-a-frame": (lambda p: sf.write(p, speech_like(0.005, 16000), 16000), None),
    "digital-silence": (lambda p: sf.write(p, np.zeros(16000), 16000), None),
    "full-scale-clipping": (
        lambda p: sf.write(p, np.clip(20 * speech_like(1.0, 16000), -1, 1), 16000),
        "full scale",
    ),
}


@pytest.mark.parametrize("case", sorted(GOOD_CASES))
def test_acceptable_inputs_give_a_correct_file(case, tmp_path, tiny_release):
    writer, notice = GOOD_CASES[case]
    source = tmp_path / "in.wav"
    writer(source)
    if not source.exists():
        source = source.with_suffix(".flac")
    out = tmp_path / "out.wav"
    result = run(["--input", source, "--output", out, "--checkpoint", tiny_release])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if notice:
        assert notice in result.stderr, result.stderr
    x, rate = load_audio(source)[0], 16000
    y, out_rate = sf.read(out, dtype="float32")
    assert out_rate == rate and y.ndim == 1 and len(y) == len(x)
    assert np.isfinite(y).all()
    expected = np.clip(fsnet.enhance(fsnet.load_model(tiny_release), x), -1, 1)
    assert np.abs(y - expected).max() < 2e-4  # 16-bit quantisation


def test_refused_inputs_give_one_line(tmp_path, tiny_release):
    out = tmp_path / "out.wav"
    cases = {}
    cases["missing"] = tmp_path / "missing.wav"
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16000)
    cases["empty"] = empty
    nan = tmp_path / "nan.wav"
    x = speech_like(1.0, 16000).astype(np.float32)
    x[100] = np.nan
    x[200] = np.inf
    sf.write(nan, x, 16000, subtype="FLOAT")
    cases["NaN"] = nan
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100))
    cases["corrupt"] = corrupt
    cases["directory"] = tmp_path
    for name, path in cases.items():
        result = run(["--input", path, "--output", out, "--checkpoint", tiny_release])
        assert_one_line_error(result)
        assert not out.exists(), f"{name}: an output file was left behind"


def test_bad_checkpoints_give_one_line(tmp_path, tiny_release):
    source = tmp_path / "in.wav"
    sf.write(source, speech_like(0.5, 16000), 16000)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_release.read_bytes()[:3000])
    wrong = tmp_path / "wrong.pt"
    import torch

    payload = torch.load(tiny_release, weights_only=True)
    payload["model_config"]["num_mels"] = 24  # weights of a different architecture
    torch.save(payload, wrong)
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")  # torch's own error is a bare KeyError '101'
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expected = {
        empty: "is not a readable torch checkpoint: it is empty",
        truncated: "is not a readable torch checkpoint: it is cut short",
        wrong: "does not match the model architecture",
        text: "is not a readable torch checkpoint: it is damaged or another kind of file",
    }
    for ckpt, message in expected.items():
        result = run(["--input", source, "--output", tmp_path / "o.wav", "--checkpoint", ckpt])
        assert_one_line_error(result)
        assert message in result.stderr and "PytorchStreamReader" not in result.stderr


def test_an_unreadable_checkpoint_keeps_the_system_reason(tmp_path, tiny_release, monkeypatch):
    import torch

    from fsnet.checkpoint import load_model
    from fsnet.errors import FsnetError

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(FsnetError, match=r"cannot read checkpoint .*: Permission denied$"):
        load_model(tiny_release)


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    # A full disk reaches the writers as their own errors (torch.save: RuntimeError "unexpected
    # pos"); atomic_write names it from the free space and removes the partial file.
    import shutil

    from fsnet.errors import FsnetError
    from fsnet.files import atomic_write

    def short_write(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 266432")

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    with pytest.raises(FsnetError, match=r"cannot write .*x\.pt: no space left on device"):
        with atomic_write(tmp_path / "x.pt") as tmp:
            short_write(tmp)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", real)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # other failures pass unchanged
        with atomic_write(tmp_path / "x.pt") as tmp:
            short_write(tmp)


def test_release_cli_will_not_overwrite_a_checkpoint(tmp_path, tiny_release):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(tiny_release.read_bytes())
    for source, destination in ((tiny_release, ckpt), (ckpt, ckpt)):
        proc = subprocess.run(
            [sys.executable, "-m", "fsnet.checkpoint", str(source), str(destination)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "exists and is a checkpoint" in proc.stderr
    assert ckpt.read_bytes() == tiny_release.read_bytes()


@pytest.mark.parametrize("script", ["stream_infer.py", "train.py", "evaluate.py"])
def test_ctrl_c_while_loading_is_one_line(script, tmp_path):
    # 0.4 s in, the script is still importing torch; later interrupts are the engines' own tests
    import signal
    import time

    args = {"stream_infer.py": ["--input", "x.wav", "--output", str(tmp_path / "y.wav")]}
    proc = subprocess.Popen(
        [sys.executable, script, *args.get(script, [])],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    # stream_infer.py keeps the signal pending until its first safe point (see fsnet.cli)
    said = "stopped by SIGINT before" if script == "stream_infer.py" else "error: interrupted"
    assert stderr.strip().splitlines()[-1].startswith(said), stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_and_sigterm_held_during_imports_are_raised_after_them():
    # The CI run that motivated this aborted with "terminate called ... pybind11::error_already_set"
    # (exit -6) when Ctrl-C landed inside torch's import; that timing cannot be reproduced on demand,
    # so the mechanism is tested: the signals wait for the block's end, then reach their handlers.
    import os
    import signal
    import time

    from fsnet.interrupts import interrupts_held

    terms = []
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
    body_finished = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # without the hold, KeyboardInterrupt is raised in here
                assert terms == []
                body_finished = True
        assert body_finished and terms == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
