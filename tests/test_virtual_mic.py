"""``--virtual-mic`` without a sound server: its options and its one-line errors."""

from __future__ import annotations

import shutil

import pytest

from fsnet.errors import FsnetError
from fsnet.live.cli import build_parser, check_args, main
from fsnet.live.virtual_mic import VirtualMic


def _checked(*argv: str):
    args = build_parser().parse_args(list(argv))
    check_args(args)
    return args


def test_virtual_mic_is_mic_mode_with_a_default_name():
    args = _checked("--virtual-mic", "--record", "out.wav", "--dry", "0.2")
    assert args.mic and args.name == "fsnet denoised microphone" and args.record == "out.wav"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--virtual-mic", "--mic"], "give one of them"),
        (["--virtual-mic", "--output-device", "1"], "leave out --output-device"),
        (["--mic", "--name", "x"], "--name is only used with --virtual-mic"),
        (["--virtual-mic", "--input", "a.wav", "--output", "b.wav"], "exclusive"),
    ],
)
def test_contradictory_options_are_refused(argv, message):
    with pytest.raises(FsnetError, match=message):
        _checked(*argv)


@pytest.mark.parametrize("name", ["", "  ", 'my "mic"', "it's", "a\\b"])
def test_names_that_cannot_go_into_module_arguments_are_refused(name):
    with pytest.raises(FsnetError, match="--name must be non-empty"):
        VirtualMic(name)


@pytest.mark.skipif(shutil.which("pactl") is None, reason="pactl not installed")
def test_no_server_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-socket")
    assert main(["--virtual-mic", "--passthrough"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: --virtual-mic needs a running PulseAudio or PipeWire"), err


def test_device_delay_comes_from_portaudio_timestamps():
    from types import SimpleNamespace

    from fsnet.live.report import Stats

    stats = Stats(0.016)
    stats.note_device_delay(None)  # no timestamps (tests, some host APIs): nothing claimed
    assert stats.input_delay_s is None
    stats.note_device_delay(
        SimpleNamespace(currentTime=10.0, inputBufferAdcTime=9.25, outputBufferDacTime=10.05)
    )
    assert stats.input_delay_s == pytest.approx(0.75)
    assert stats.output_delay_s == pytest.approx(0.05)
