"""The live tool's command line: options, their checks, and :func:`main`."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
from pathlib import Path

from fsnet.audio import SAMPLE_RATE
from fsnet.cli import Stopped, StopSignals, exit_status, run
from fsnet.errors import FsnetError
from fsnet.frontend import MaskShaping
from fsnet.live.virtual_mic import DEFAULT_NAME

PROG = "stream_infer.py"
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line and exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FsnetError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Real-time Fast FullSubNet speech enhancement, from a microphone or a file.",
    )
    _mode_and_model_options(p)
    _device_options(p.add_argument_group("live audio (--mic)"))
    _file_and_report_options(p.add_argument_group("files and reporting"))
    return p


def _mode_and_model_options(p: argparse.ArgumentParser) -> None:
    mode = p.add_argument_group("what to run")
    mode.add_argument(
        "--mic", action="store_true", help="enhance the input device to the output device live"
    )
    mode.add_argument(
        "--virtual-mic",
        action="store_true",
        help="like --mic, but into a new microphone of the PulseAudio/PipeWire server that other "
        "applications can choose, instead of the speakers",
    )
    mode.add_argument(
        "--name",
        metavar="TEXT",
        help=f"with --virtual-mic: the microphone's name (default '{DEFAULT_NAME}')",
    )
    mode.add_argument(
        "--input", metavar="NOISY.wav", help="enhance this file block by block (needs --output)"
    )
    mode.add_argument(
        "--output", metavar="ENHANCED.wav", help="where --input's enhanced audio goes"
    )
    mode.add_argument("--list-devices", action="store_true", help="list audio devices and exit")

    model = p.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="fsnet release file, Lightning .ckpt or FullSubNet checkpoint (default: bundled model)",
    )
    model.add_argument(
        "--passthrough",
        action="store_true",
        help="no model: copy input to output (measures the audio path's own delay)",
    )
    model.add_argument(
        "--dry",
        type=float,
        default=0.0,
        metavar="0..1",
        help="share of unprocessed signal mixed back (default 0)",
    )
    model.add_argument(
        "--postfilter",
        type=float,
        default=0.0,
        metavar="P",
        help="stronger noise suppression: mask M -> M * min(|M|, 1)^P where the model attenuates "
        "(default 0 = off; 0.3 removes more noise at some cost to WB-PESQ)",
    )
    model.add_argument(
        "--atten-lim-db",
        type=float,
        metavar="DB",
        help="attenuate no bin by more than DB decibels (default: no limit)",
    )
    model.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch intra-op threads (default 1: one hop is too little work to share, and "
        "waiting for a descheduled helper thread causes long stalls on a busy machine)",
    )


def _device_options(dev: argparse._ArgumentGroup) -> None:
    dev.add_argument(
        "--input-device", metavar="DEV", help="index or name substring (default: system default)"
    )
    dev.add_argument(
        "--output-device", metavar="DEV", help="index or name substring (default: system default)"
    )
    dev.add_argument(
        "--samplerate",
        type=int,
        metavar="HZ",
        help="device rate (default: 16000 if accepted, else the device's)",
    )
    dev.add_argument(
        "--input-channels",
        type=int,
        metavar="N",
        help="capture channels, downmixed (default: up to 2)",
    )
    dev.add_argument(
        "--output-channels",
        type=int,
        metavar="N",
        help="playback channels, all the same (default: up to 2)",
    )
    dev.add_argument(
        "--blocksize",
        type=int,
        metavar="N",
        help="device frames per callback (default: JACK's period on JACK, else one 16 ms hop at "
        "the device rate)",
    )
    dev.add_argument(
        "--latency",
        metavar="low|high|SECONDS",
        help="PortAudio suggested latency (default low)",
    )
    dev.add_argument(
        "--engine",
        choices=("callback", "thread"),
        help="where the model runs: in the audio callback (default) or in a worker thread",
    )
    dev.add_argument(
        "--queue-blocks",
        type=int,
        metavar="N",
        help="with --engine thread: blocks of jitter buffer the worker may fall behind (default 2)",
    )
    dev.add_argument(
        "--resample-quality",
        choices=RESAMPLE_QUALITIES,
        help="soxr quality when the device rate is not 16 kHz (default HQ; LQ/QQ have less delay)",
    )
    dev.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this much audio")
    dev.add_argument(
        "--record",
        metavar="OUT.wav",
        help="also save the enhanced signal (16 kHz, time-aligned with --record-noisy)",
    )
    dev.add_argument(
        "--record-noisy",
        metavar="IN.wav",
        help="also save the capture as the model sees it (16 kHz mono)",
    )


def _file_and_report_options(out: argparse._ArgumentGroup) -> None:
    out.add_argument(
        "--block-samples",
        type=int,
        metavar="N",
        help="file mode: samples at 16 kHz fed to the engine at a time (default 16000, one second; "
        "256, one hop, with --realtime)",
    )
    out.add_argument(
        "--subtype",
        type=str.upper,
        help="soundfile subtype of written files (default PCM_16 where the format takes it, "
        "else the format's own: VORBIS for .ogg, OPUS for .opus; FLOAT for exact)",
    )
    out.add_argument(
        "--realtime", action="store_true", help="file mode: pace the blocks at real time"
    )
    out.add_argument("--summary-json", metavar="PATH", help="write the exit summary as JSON")
    out.add_argument(
        "--status-interval",
        type=float,
        metavar="SECONDS",
        help="status line period (default 0.5 s on a terminal, 5 s otherwise; 0 = none)",
    )


# Options of --mic only (None when not given), with the defaults --mic applies.

MIC_ONLY = {
    "blocksize": None,
    "input_device": None,
    "output_device": None,
    "samplerate": None,
    "input_channels": None,
    "output_channels": None,
    "latency": "low",
    "engine": "callback",
    "queue_blocks": 2,
    "resample_quality": "HQ",
    "record": None,
    "record_noisy": None,
}


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) hard links."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def check_args(args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range options (FsnetError); fill in the --mic defaults."""
    if args.list_devices:
        return
    _check_mode(args)
    _check_values(args)
    _check_paths(args)


def _check_mode(args: argparse.Namespace) -> None:
    if args.virtual_mic:
        if args.mic:
            raise FsnetError("--virtual-mic is --mic into a virtual microphone: give one of them")
        if args.output_device is not None:
            raise FsnetError("--virtual-mic plays into its own device: leave out --output-device")
        args.mic = True  # every --mic option and check applies
        args.name = DEFAULT_NAME if args.name is None else args.name
    elif args.name is not None:
        raise FsnetError("--name is only used with --virtual-mic")
    if args.mic and (args.input or args.output):
        raise FsnetError(
            "--mic and --input/--output are exclusive: enhance either the microphone or a file"
        )
    if args.input and not args.output:
        raise FsnetError("--input needs --output (where the enhanced file goes)")
    if args.output and not args.input:
        raise FsnetError("--output needs --input (the noisy file to enhance)")
    if not args.mic and not args.input:
        raise FsnetError(
            "nothing to do: use --mic, --input NOISY.wav --output ENHANCED.wav, or --list-devices"
        )
    if args.input and args.blocksize is not None:
        raise FsnetError(
            "--blocksize is the device block of --mic; in file mode use --block-samples "
            "(16 kHz samples per block)"
        )
    if args.input:
        for name in MIC_ONLY:
            if getattr(args, name) is not None:
                raise FsnetError(f"--{name.replace('_', '-')} is only used with --mic")
    elif args.realtime:
        raise FsnetError("--realtime is only used with --input (file mode)")
    elif args.block_samples is not None:
        raise FsnetError("--block-samples is only used with --input (file mode)")
    for name, default in MIC_ONLY.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def _check_values(args: argparse.Namespace) -> None:
    if not 0.0 <= args.dry <= 1.0:
        raise FsnetError(f"--dry must be between 0 and 1, got {args.dry}")
    args.shaping = MaskShaping.checked(
        args.postfilter, args.atten_lim_db, names=("--postfilter", "--atten-lim-db")
    )
    if args.passthrough and args.shaping.active:
        raise FsnetError(
            "--postfilter and --atten-lim-db shape the model's mask: not with --passthrough"
        )
    for name in ("blocksize", "block_samples", "queue_blocks", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FsnetError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.duration is not None and not (
        math.isfinite(args.duration) and args.duration >= 1 / SAMPLE_RATE
    ):
        raise FsnetError(
            f"--duration must be at least one sample (1/{SAMPLE_RATE} s = {1 / SAMPLE_RATE:g} s), "
            f"got {args.duration:g}"
        )
    for name in ("input_channels", "output_channels", "samplerate"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise FsnetError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _check_paths(args: argparse.Namespace) -> None:
    if args.record and args.record_noisy and _same_file(args.record, args.record_noisy):
        raise FsnetError("--record and --record-noisy must be different files")
    if args.input and _same_file(args.input, args.output):
        raise FsnetError(
            f"--output {args.output} is the same file as --input: it would overwrite the "
            "recording; choose another name"
        )
    if args.summary_json:
        for flag in ("input", "output", "record", "record_noisy"):
            if getattr(args, flag) and _same_file(args.summary_json, getattr(args, flag)):
                raise FsnetError(
                    f"--summary-json {args.summary_json} is the same file as "
                    f"--{flag.replace('_', '-')}; choose another name"
                )
    if args.input and Path(args.output).exists() and Path(args.output).is_dir():
        raise FsnetError(f"--output {args.output} is a directory")


def main(argv: list[str] | None = None) -> int:
    """Run the tool; the exit status: 0, 1 with one ``error:`` line, or 128 + a stop signal."""
    with StopSignals(blocked=True) as stop:
        return run(lambda: _main(argv, stop))


def _main(argv: list[str] | None, stop: StopSignals) -> int:
    from fsnet.live.file_mode import run_file
    from fsnet.live.mic_mode import run_mic

    args = build_parser().parse_args(argv)
    check_args(args)
    if args.list_devices:
        from fsnet.live.devices import list_devices

        return list_devices()
    # Process-wide settings (torch threads, GIL switch interval) are undone on the way out:
    # main() also runs inside other programs and tests.
    with contextlib.ExitStack() as undo:
        try:
            if args.virtual_mic:
                from fsnet.live.virtual_mic import run_virtual_mic

                return run_virtual_mic(args, stop, undo)
            if args.mic:
                return run_mic(args, stop, undo)
            return run_file(args, stop, undo)
        except Stopped as exc:  # at a safe point before the stream started
            print(
                f"stopped by {signal.Signals(exc.signum).name} before streaming started",
                file=sys.stderr,
                flush=True,
            )
            return exit_status(exc.signum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
