"""stream_infer.py: file mode, interruption, errors, and --mic --record under JACK."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.jack_harness import (
    REPO,
    JackUnavailable,
    make_noisy,
    run_loop,
    save_tiny_model,
    start_jackd,
)

from fsnet.live.cli import main

PROGRAM = REPO / "stream_infer.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import fsnet

    path = save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")
    return path, fsnet.load_model(path)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    x = make_noisy(3.0, 16000, seed=3)
    path = tmp_path_factory.mktemp("audio") / "noisy.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    return path, x


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["JACK_NO_START_SERVER"] = "1"
    return env


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROGRAM), *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------ file mode
@pytest.mark.parametrize("blocksize", [256, 100, 1000])
def test_file_mode_equals_offline_enhance(tiny, noisy, tmp_path, capsys, blocksize):
    import fsnet

    path, model = tiny
    noisy_path, x = noisy
    out = tmp_path / "enh.wav"
    summary = tmp_path / "summary.json"
    rc = main(
        [
            "--input",
            str(noisy_path),
            "--output",
            str(out),
            "--checkpoint",
            str(path),
            "--subtype",
            "FLOAT",
            "--block-samples",
            str(blocksize),
            "--summary-json",
            str(summary),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    y, sr = sf.read(out, dtype="float32")
    assert sr == 16000 and len(y) == len(x)
    np.testing.assert_allclose(y, fsnet.enhance(model, x), atol=1e-4)
    s = json.loads(summary.read_text())
    assert s["blocks"] == -(-len(x) // blocksize) and s["samples_written"] == len(x)
    assert s["compute"]["max_ms"] > 0 and s["rtf"] > 0
    err = capsys.readouterr().err
    assert "summary:" in err and "RTF" in err
    assert not list(tmp_path.glob(".*partial")), "temporary file left behind"


def test_file_mode_default_pcm16(tiny, noisy, tmp_path, capsys):
    path, _ = tiny
    noisy_path, x = noisy
    out = tmp_path / "enh.wav"
    assert main(["--input", str(noisy_path), "--output", str(out), "--checkpoint", str(path)]) == 0
    info = sf.info(out)
    assert info.subtype == "PCM_16" and info.frames == len(x) and info.samplerate == 16000


def test_stereo_48k_input_is_downmixed_and_resampled(tiny, tmp_path, capsys):
    import fsnet

    path, model = tiny
    x48 = make_noisy(1.0, 48000, seed=4)
    stereo = np.stack((x48, 0.5 * x48), axis=1)
    src = tmp_path / "stereo48k.wav"
    sf.write(src, stereo, 48000, subtype="FLOAT")
    out = tmp_path / "enh.wav"
    rc = main(
        ["--input", str(src), "--output", str(out), "--checkpoint", str(path), "--subtype", "FLOAT"]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes, err  # a notice about the downmix / resampling
    from fsnet.audio import load_audio

    x16, _ = load_audio(src, 16000)
    y, sr = sf.read(out, dtype="float32")
    assert sr == 16000 and len(y) == len(x16)
    np.testing.assert_allclose(y, fsnet.enhance(model, x16), atol=1e-4)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_realtime_file_run_leaves_valid_prefix(tiny, noisy, tmp_path, sig, code):
    """Stopped mid-way, the output is complete and valid: the enhancement of what was read."""
    import fsnet

    path, model = tiny
    noisy_path, x = noisy
    out = tmp_path / "enh.wav"
    out.write_bytes(b"previous")
    proc = subprocess.Popen(
        [sys.executable, str(PROGRAM), "--input", str(noisy_path), "--output", str(out)]
        + [
            "--checkpoint",
            str(path),
            "--subtype",
            "FLOAT",
            "--realtime",
            "--status-interval",
            "0.2",
        ],
        cwd=REPO,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:  # progress marker: the first status line (>= 0.2 s processed)
        lines.append(line)
        if line.startswith("status:"):
            break
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=30)
    err = "".join(lines) + rest
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "warning: interrupted" in err
    y, sr = sf.read(out, dtype="float32")
    assert sr == 16000 and 0 < len(y) < len(x), err
    np.testing.assert_allclose(y, fsnet.enhance(model, x[: len(y)]), atol=1e-4)
    assert not list(tmp_path.glob(".*partial"))


# ------------------------------------------------------------------------------------ errors
def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--input", "{noisy}"], "--input needs --output"),
        (["--output", "{tmp}/o.wav"], "--output needs --input"),
        ([], "nothing to do"),
        (["--mic", "--input", "{noisy}", "--output", "{tmp}/o.wav"], "exclusive"),
        (["--input", "{tmp}/missing.wav", "--output", "{tmp}/o.wav"], "no such file"),
        (["--input", "{corrupt}", "--output", "{tmp}/o.wav"], "cannot read"),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--checkpoint", "{corrupt}"], ""),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--checkpoint", "{tmp}/nope.pt"], ""),
        (["--input", "{noisy}", "--output", "{tmp}/o.xyz"], "extension"),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--subtype", "BOGUS"], "subtype"),
        (["--mic", "--dry", "2"], "--dry"),
        (["--bogus-option"], "unrecognized"),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--duration", "0.00001"], "one sample"),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--duration", "nan"], "--duration"),
        (["--input", "{noisy}", "--output", "{tmp}/o.opus", "--subtype", "VORBIS"], "OPUS"),
        # an output folder that cannot be created: refused before the model loads, user's name
        (["--input", "{noisy}", "--output", "{corrupt}/o.wav"], "corrupt.wav is not a folder"),
        (["--input", "{copy}", "--output", "{tmp}/o.wav", "--summary-json", "{copy}"], "same"),
    ]
    + [
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", flag, value], f"{flag} is only used")
        for flag, value in [
            ("--record", "{tmp}/r.wav"),
            ("--record-noisy", "{tmp}/n.wav"),
            ("--samplerate", "44100"),
            ("--engine", "callback"),
            ("--engine", "thread"),
            ("--latency", "low"),
            ("--queue-blocks", "2"),
            ("--resample-quality", "HQ"),
            ("--input-device", "0"),
            ("--output-device", "0"),
            ("--input-channels", "1"),
            ("--output-channels", "1"),
        ]
    ]
    + [(["--mic", "--realtime"], "--realtime is only used with --input")]
    + [
        (
            ["--input", "{noisy}", "--output", "{tmp}/o.wav", "--blocksize", "256"],
            "--block-samples",
        ),
        (["--mic", "--block-samples", "256"], "--block-samples is only used with --input"),
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", "--block-samples", "0"], ">= 1"),
    ]
    + [
        (["--input", "{noisy}", "--output", "{tmp}/o.wav", *flags], pattern)
        for flags, pattern in [
            (["--postfilter", "-1"], "--postfilter must be a finite number >= 0"),
            (["--postfilter", "nan"], "--postfilter must be"),
            (["--postfilter", "inf"], "--postfilter must be"),
            (["--postfilter", "strong"], "--postfilter: invalid float value"),
            (["--atten-lim-db", "0"], "--atten-lim-db must be a finite number of dB > 0"),
            (["--atten-lim-db", "-12"], "--atten-lim-db must be"),
            (["--atten-lim-db", "inf"], "--atten-lim-db must be"),
            (["--passthrough", "--postfilter", "0.3"], "not with --passthrough"),
        ]
    ],
)
def test_errors_are_one_line_exit_1(argv, pattern, tiny, noisy, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    copy = tmp_path / "copy.wav"  # for rows that could damage their input
    copy.write_bytes(Path(noisy[0]).read_bytes())
    fields = {"noisy": noisy[0], "tmp": tmp_path, "corrupt": corrupt, "copy": copy}
    argv = [a.format(**fields) for a in argv]
    if "--checkpoint" not in argv and "--input" in argv:
        argv += ["--checkpoint", str(tiny[0])]
    rc = main(argv)
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1
    assert re.search(re.escape(pattern), line), line
    assert not (tmp_path / "o.wav").exists()
    assert ".partial" not in line and not list(tmp_path.glob(".*partial"))


def test_nonexistent_device_is_one_line_exit_1():
    proc = _run("--mic", "--passthrough", "--input-device", "no such device 42")
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1
    assert "no such device 42" in line and "input devices:" in line


def test_list_devices():
    proc = _run("--list-devices")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


# ------------------------------------------------------------------------------------ --mic
@pytest.fixture(scope="module")
def jack16(tmp_path_factory):
    try:
        server = start_jackd(16000, 256, log_dir=tmp_path_factory.mktemp("jackd"))
    except JackUnavailable as exc:
        warnings.warn(f"JACK server unavailable: {exc}", stacklevel=2)
        pytest.skip(f"JACK server unavailable: {exc}")
    yield server
    server.stop()


def _run_on(server, *args: str) -> subprocess.CompletedProcess:
    env = _env()
    env.update({k: server.env[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")})
    return subprocess.run(
        [sys.executable, str(PROGRAM), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.jack
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_mic_record_stopped_by_signal_leaves_valid_wavs(jack16, tiny, tmp_path, sig):
    import fsnet

    path, model = tiny
    x = make_noisy(4.0, 16000, seed=5)
    enh, cap = tmp_path / "enh.wav", tmp_path / "cap.wav"
    result = run_loop(
        jack16,
        x,
        ["--checkpoint", str(path), "--record", str(enh), "--record-noisy", str(cap)],
        tmp_path / "summary.json",
        stop_signal=sig,
        stop_after_samples=16000,  # stop 1 s into the file
    )
    assert result.rc == 0, result.stderr
    assert f"stopped by {signal.Signals(sig).name}" in result.stderr
    assert result.summary["stop_reason"] == f"stopped by {signal.Signals(sig).name}"
    info_e, info_c = sf.info(enh), sf.info(cap)
    assert info_e.subtype == info_c.subtype == "PCM_16"
    assert info_e.samplerate == info_c.samplerate == 16000
    assert info_e.frames == info_c.frames >= 16000
    y, _ = sf.read(enh, dtype="float32")
    c, _ = sf.read(cap, dtype="float32")
    assert np.abs(c).max() > 0.1 and np.abs(y).max() > 0.01  # the file went in, and came out
    np.testing.assert_allclose(y, fsnet.enhance(model, c), atol=3e-3)  # 16-bit quantisation


@pytest.mark.jack
def test_mic_duration_stops_by_itself(jack16, tmp_path):
    summary = tmp_path / "s.json"
    proc = _run_on(
        jack16, "--mic", "--passthrough", "--duration", "0.5", "--summary-json", str(summary)
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(summary.read_text())
    assert s["stop_reason"] == "duration reached"
    assert 0.5 <= s["audio_seconds"] <= 0.5 + 2 * s["block_ms"] / 1e3


@pytest.mark.jack
@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--samplerate", "44100"], "refuse float32 audio at 44100 Hz"),
        (["--input-channels", "5"], "refuse"),
        (["--output-device", "no such device"], "'system' (2 ch)"),
    ],
)
def test_device_refusing_format_is_one_line_exit_1(jack16, args, pattern):
    proc = _run_on(jack16, "--mic", "--passthrough", *args)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1 and pattern in line, line


def test_stream_infer_wrapper_help():
    proc = _run("--help")
    assert proc.returncode == 0 and "--mic" in proc.stdout and "--record" in proc.stdout


def test_dry_mix_is_delay_aligned(tiny, noisy, tmp_path, capsys):
    """--dry 1 gives back the input (delay-aligned): the mix is on the same timeline."""
    path, _ = tiny
    noisy_path, x = noisy
    out = tmp_path / "dry.wav"
    args = ["--input", str(noisy_path), "--output", str(out), "--checkpoint", str(path)]
    assert main([*args, "--subtype", "FLOAT", "--dry", "1"]) == 0
    y, _ = sf.read(out, dtype="float32")
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_mask_shaping_flags_reach_the_engine(tiny, noisy, tmp_path, capsys):
    """--postfilter / --atten-lim-db: the file streamed equals fsnet.enhance with that shaping."""
    import fsnet

    path, model = tiny
    noisy_path, x = noisy
    out = tmp_path / "shaped.wav"
    args = ["--input", str(noisy_path), "--output", str(out), "--checkpoint", str(path)]
    assert main([*args, "--subtype", "FLOAT", "--postfilter", "0.5", "--atten-lim-db", "12"]) == 0
    assert "postfilter 0.5, attenuation limit 12 dB" in capsys.readouterr().err
    y, _ = sf.read(out, dtype="float32")
    shaping = fsnet.MaskShaping(postfilter=0.5, atten_lim_db=12)
    np.testing.assert_allclose(y, fsnet.enhance(model, x, shaping=shaping), atol=1e-4)
    assert np.abs(y - fsnet.enhance(model, x)).max() > 1e-3


def test_passthrough_file_mode(noisy, tmp_path, capsys):
    noisy_path, x = noisy
    out = tmp_path / "copy.wav"
    assert (
        main(
            [
                "--input",
                str(noisy_path),
                "--output",
                str(out),
                "--passthrough",
                "--subtype",
                "FLOAT",
            ]
        )
        == 0
    )
    y, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(y, x)


def test_summary_mentions_paths(tiny, noisy, tmp_path, capsys):
    path, _ = tiny
    out = tmp_path / "enh.wav"
    assert main(["--input", str(noisy[0]), "--output", str(out), "--checkpoint", str(path)]) == 0
    err = capsys.readouterr().err
    assert str(Path(noisy[0])) in err and "algorithmic 48.0 ms" in err


# ------------------------------------------------------------------------------ audit fixes
@pytest.mark.parametrize("spelling", ["same", "dot", "hardlink", "symlink"])
def test_output_same_file_as_input_is_refused(tmp_path, capsys, spelling):
    """--output naming the --input file (however spelled) would overwrite the recording."""
    src = tmp_path / "rec.wav"
    sf.write(src, make_noisy(0.5, 16000, seed=1), 16000)
    before = src.read_bytes()
    inp, out = str(src), str(src)
    if spelling == "dot":
        out = str(tmp_path / "." / "rec.wav")
    elif spelling == "hardlink":
        os.link(src, tmp_path / "link.wav")
        out = str(tmp_path / "link.wav")
    elif spelling == "symlink":
        (tmp_path / "sym.wav").symlink_to(src)
        inp = str(tmp_path / "sym.wav")
    rc = main(["--input", inp, "--output", out, "--passthrough"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 1 and "same file as --input" in line, line
    assert src.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "subtype"),
    [("enh.ogg", "VORBIS"), ("enh.opus", "OPUS"), ("enh.flac", "PCM_16"), ("enh.wav", "PCM_16")],
)
def test_default_subtype_suits_the_container(noisy, tmp_path, capsys, name, subtype):
    if subtype == "OPUS" and "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus encoder")
    from fsnet.audio import write_audio

    noisy_path, x = noisy
    out = tmp_path / name
    assert main(["--input", str(noisy_path), "--output", str(out), "--passthrough"]) == 0, (
        capsys.readouterr().err
    )
    info = sf.info(out)
    assert info.subtype == subtype and info.samplerate == 16000 and info.frames == len(x)
    y, _ = sf.read(out, dtype="float32")
    assert np.corrcoef(y, x)[0, 1] > 0.9  # lossy codecs: the signal, not bit-exact
    lib = write_audio(tmp_path / "lib" / name, x)  # the library writer agrees (atomically)
    assert sf.info(lib).subtype == subtype and not list(lib.parent.glob(".*"))


def test_opus_needs_an_opus_rate(tmp_path):
    from fsnet.audio import write_audio
    from fsnet.errors import FsnetError

    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("this libsndfile has no Opus encoder")
    with pytest.raises(FsnetError, match="Opus takes"):
        write_audio(tmp_path / "x.opus", np.zeros(4410, np.float32), 44100)
    assert not list(tmp_path.iterdir())


def test_unwritable_summary_json_exits_1_and_keeps_the_audio(noisy, tmp_path, capsys):
    noisy_path, x = noisy
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = tmp_path / "enh.wav"
    rc = main(
        ["--input", str(noisy_path), "--output", str(out), "--passthrough"]
        + ["--summary-json", str(blocker / "s.json")]
    )
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.strip().splitlines()[-1].startswith("error: cannot write --summary-json"), err
    assert "Traceback" not in err
    assert sf.info(out).frames == len(x)


def test_missing_output_folder_is_created(noisy, tmp_path, capsys):
    noisy_path, x = noisy
    out = tmp_path / "new" / "sub" / "enh.wav"
    rc = main(["--input", str(noisy_path), "--output", str(out), "--passthrough"])
    assert rc == 0, capsys.readouterr().err
    assert sf.info(out).frames == len(x)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_before_streaming_exit_code(noisy, tmp_path, capsys, monkeypatch, sig, code):
    """128 + signal number while the model loads too, as once streaming has started; the load
    itself is not cut short (the signal waits for the next safe point)."""
    import fsnet.live.file_mode
    from fsnet.live.engine import PassthroughEngine

    loaded = []

    def interrupted_load(args, undo):
        signal.raise_signal(sig)
        loaded.append(True)  # the handler did not raise inside the load
        return PassthroughEngine(), "passthrough"

    monkeypatch.setattr(fsnet.live.file_mode, "load_engine", interrupted_load)
    out = tmp_path / "enh.wav"
    rc = main(["--input", str(noisy[0]), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == code, err
    assert f"stopped by {signal.Signals(sig).name} before streaming started" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    assert loaded and not list(tmp_path.glob(".*"))


def test_underflow_at_the_first_callback_is_start_up_not_dropped_audio():
    # PortAudio's ALSA backend on PulseAudio flags an output underflow at the first callback of
    # every stream: the device ran before anything was produced. Later ones are lost audio.
    import sounddevice as sd

    from fsnet.live.engine import PassthroughEngine
    from fsnet.live.pipeline import LivePipeline
    from fsnet.live.report import Stats, keep_up_warnings

    stats = Stats(256 / 16000)
    pipe = LivePipeline(PassthroughEngine(), 16000, 256, 1, "HQ", None, stats, False, 2, None)
    block = np.full((256, 1), 0.1, dtype=np.float32)
    out = np.zeros((256, 1), dtype=np.float32)

    def flags(*names: str) -> sd.CallbackFlags:  # what PortAudio hands the callback
        status = sd.CallbackFlags()
        for name in names:
            setattr(status, name, True)
        return status

    underflow = flags("output_underflow")
    both = flags("output_underflow", "input_overflow")
    for status in (underflow, flags(), underflow, both):
        pipe.callback(block, out, 256, None, status)
    assert np.allclose(out, 0.1)  # the passthrough's audio reached the output
    assert (stats.startup_underflows, stats.output_underflows, stats.input_overflows) == (1, 2, 1)
    assert stats.drop_callbacks == [3, 4]

    summary = {"mode": "mic", "rtf": 0.1, "block_ms": 16.0, "compute": {"p99_ms": 1.0}}
    assert keep_up_warnings({**summary, "startup_output_underflows": 1}) == []
    warned = keep_up_warnings({**summary, "output_underflows": 1})
    assert warned and warned[0].startswith("audio was dropped")


def test_fifo_keeps_its_contents_when_it_grows():
    """A write larger than the free space grows the ring buffer without losing what it held
    (the --dry delay line meets this with file mode's one-second blocks)."""
    from fsnet.live.engine import Fifo

    fifo = Fifo(16)
    fifo.write(np.arange(10, dtype=np.float32))
    assert fifo.read(3).tolist() == [0, 1, 2]
    fifo.write(np.arange(10, 40, dtype=np.float32))
    assert fifo.size == 37
    np.testing.assert_array_equal(fifo.read(100), np.arange(3, 40, dtype=np.float32))
