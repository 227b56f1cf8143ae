"""``--mic``: enhance the input device to the output device live (see fsnet.live.pipeline)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from dataclasses import dataclass
from typing import Any

from fsnet.audio import SAMPLE_RATE
from fsnet.cli import StopSignals
from fsnet.errors import FsnetError
from fsnet.live.devices import (
    CStderrCaptured,
    choose_format,
    import_sounddevice,
    jack_period,
    parse_latency,
    resolve_device,
)
from fsnet.live.engine import gc_frozen, load_engine, warm_up
from fsnet.live.pipeline import LivePipeline
from fsnet.live.record import Recorder
from fsnet.live.report import Stats, StatusPrinter, keep_up_warnings, print_summary


@dataclass
class Devices:
    """The devices and format a --mic run opens."""

    sd: Any  # the sounddevice module
    in_idx: int
    in_info: dict
    out_idx: int
    out_info: dict
    rate: int  # device frames per second
    cin: int  # capture channels
    cout: int  # playback channels
    latency: str | float  # PortAudio's suggested latency
    blocksize: int  # frames per callback asked of PortAudio; 0: JACK's period
    expected_blocksize: int | None  # what the callbacks will bring, if known before the start


def find_devices(args: argparse.Namespace) -> Devices:
    sd = import_sounddevice()
    latency = parse_latency(args.latency)
    in_idx, in_info = resolve_device(sd, args.input_device, "input")
    out_idx, out_info = resolve_device(sd, args.output_device, "output")
    rate, cin, cout = choose_format(sd, args, in_idx, in_info, out_idx, out_info)
    hostapi = sd.query_hostapis(in_info["hostapi"])["name"]
    if args.blocksize:
        blocksize = expected = args.blocksize
    elif "JACK" in hostapi:
        # 0: PortAudio calls back once per JACK period with exactly the period's frames. A fixed
        # size that is not the period makes it call back 0, 1 or 2 times in a cycle (xruns).
        blocksize, expected = 0, jack_period()
    else:
        blocksize = expected = max(1, round(256 * rate / SAMPLE_RATE))  # one 16 ms hop
    return Devices(
        sd, in_idx, in_info, out_idx, out_info, rate, cin, cout, latency, blocksize, expected
    )


def run_mic(
    args: argparse.Namespace,
    stop: StopSignals,
    undo: contextlib.ExitStack,
    output_gone: threading.Event | None = None,
) -> int:
    """Enhance the input device to the output device until a stop signal, --duration or the end
    of the stream; 0 after the summary (a stop signal is the normal way to end)."""
    dev = find_devices(args)
    stop.check()
    engine, source = load_engine(args, undo)
    stop.check()
    warm_up(engine)
    stop.check()
    recorder = None
    if args.record or args.record_noisy:
        recorder = Recorder(args.record_noisy, args.record, args.subtype, engine.latency_samples)
    stats = Stats((dev.expected_blocksize or 256 * dev.rate / SAMPLE_RATE) / dev.rate)
    duration_frames = int(round(args.duration * dev.rate)) if args.duration else None
    pipe = LivePipeline(
        engine,
        dev.rate,
        dev.expected_blocksize or 0,
        dev.cout,
        args.resample_quality,
        recorder,
        stats,
        threaded=args.engine == "thread",
        queue_blocks=args.queue_blocks,
        duration_frames=duration_frames,
    )
    status = StatusPrinter(args.status_interval)
    tail = None
    failure: FsnetError | None = None
    try:
        device_latency, stop_reason = _play(
            args, dev, pipe, source, stop, status, undo, output_gone or threading.Event()
        )
    except FsnetError as exc:
        failure = exc
    finally:
        status.end()
        try:
            tail = pipe.finish()
        finally:
            if recorder is not None:
                recorder.close(tail)
    if failure is not None:
        if recorder is not None:
            recorder.discard()
        raise failure
    if pipe.error is not None:
        raise FsnetError(f"audio processing failed: {type(pipe.error).__name__}: {pipe.error}")
    summary = _summary(args, dev, engine, pipe, device_latency, stop_reason)
    summary["warnings"] = keep_up_warnings(summary)
    print_summary(summary, args.summary_json)
    return 0


def _open_stream(dev: Devices, pipe: LivePipeline) -> Any:
    sd = dev.sd
    try:
        with CStderrCaptured():  # PortAudio's message is in the exception
            return sd.Stream(
                samplerate=dev.rate,
                blocksize=dev.blocksize,
                device=(dev.in_idx, dev.out_idx),
                channels=(dev.cin, dev.cout),
                dtype="float32",
                latency=dev.latency,
                callback=pipe.callback,
                finished_callback=pipe.finished,
            )
    except (sd.PortAudioError, ValueError) as exc:
        raise FsnetError(
            f"cannot open audio stream '{dev.in_info['name']}' -> '{dev.out_info['name']}' at "
            f"{dev.rate} Hz, {dev.cin}/{dev.cout} ch, blocks of {dev.blocksize}: {exc}"
        ) from exc


def _play(
    args: argparse.Namespace,
    dev: Devices,
    pipe: LivePipeline,
    source: str,
    stop: StopSignals,
    status: StatusPrinter,
    undo: contextlib.ExitStack,
    output_gone: threading.Event,
) -> tuple[tuple[float, float], str]:
    """Run the stream until it ends; returns (device latencies in s, why it stopped)."""
    with _open_stream(dev, pipe) as stream:
        if pipe.worker is not None:
            # the audio callback needs the GIL the worker holds between torch ops: hand it
            # over sooner than the default 5 ms
            undo.callback(sys.setswitchinterval, sys.getswitchinterval())
            sys.setswitchinterval(0.0005)
            pipe.worker.start()
        chatter = CStderrCaptured()
        try:
            with chatter:
                stream.start()
                started = pipe.first_callback.wait(10.0)
        except dev.sd.PortAudioError as exc:
            raise FsnetError(f"cannot start audio stream: {exc}{chatter.hint()}") from exc
        device_latency = (float(stream.latency[0]), float(stream.latency[1]))
        if not started:
            raise FsnetError(
                f"the audio stream '{dev.in_info['name']}' -> '{dev.out_info['name']}' started but "
                f"delivers no audio{chatter.hint()} (is the device or the JACK server running?)"
            )
        _announce(args, dev, pipe, source)
        undo.enter_context(gc_frozen())  # no full collection inside the audio callback
        # Signals are collected here, in slices of at most 0.1 s so that the end of the stream
        # is noticed too; each wake-up briefly takes the GIL the audio callback needs.
        while not pipe.done.is_set() and not stop.wait(min(0.1, status.seconds_to_next())):
            status.maybe_print(pipe.stats)
            if output_gone.is_set():  # e.g. --virtual-mic's device unloaded by someone else
                break
        if output_gone.is_set() and not stop.requested:
            stop_reason = "output device removed"
        elif stop.requested:
            stop_reason = f"stopped by {stop.name}"
        elif pipe.error is None and not (
            pipe.duration_frames and pipe.frames_in >= pipe.duration_frames
        ):
            stop_reason = "audio stream ended"
        else:
            stop_reason = "duration reached"
        if pipe.error is not None:
            stream.abort()
        else:
            stream.stop()
    return device_latency, stop_reason


def _announce(args: argparse.Namespace, dev: Devices, pipe: LivePipeline, source: str) -> None:
    blocksize, rate, latency = pipe.blocksize, dev.rate, pipe.engine.latency_samples
    print(
        f"listening: '{dev.in_info['name']}' ({dev.cin} ch) -> '{dev.out_info['name']}' ({dev.cout} ch) at {rate} Hz, "
        f"blocks of {blocksize} ({1e3 * blocksize / rate:.1f} ms), engine in {args.engine}, {source}; "
        f"latency {latency / SAMPLE_RATE * 1e3:.1f} ms algorithmic + "
        f"{pipe.pipeline_latency_s * 1e3:.1f} ms buffering (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )


def _summary(
    args: argparse.Namespace,
    dev: Devices,
    engine: Any,
    pipe: LivePipeline,
    device_latency: tuple[float, float],
    stop_reason: str,
) -> dict[str, Any]:
    stats, rate = pipe.stats, dev.rate
    return {
        "mode": "mic",
        "engine": engine.name,
        "engine_thread": args.engine,
        "input_device": dev.in_info["name"],
        "output_device": dev.out_info["name"],
        "device_rate": rate,
        "input_channels": dev.cin,
        "output_channels": dev.cout,
        "blocksize": pipe.blocksize,
        "block_ms": 1e3 * pipe.blocksize / rate,
        "blocks": stats.blocks,
        "callbacks": stats.callbacks,
        "audio_seconds": stats.audio_seconds,
        "compute": stats.compute_stats(),
        "rtf": stats.rtf(),
        "input_overflows": stats.input_overflows,
        "output_underflows": stats.output_underflows,
        "startup_output_underflows": stats.startup_underflows,
        "input_underflows": stats.input_underflows,
        "output_overflows": stats.output_overflows,
        "late_blocks": stats.late_blocks,
        "slow_blocks": stats.slow_blocks,
        "nonfinite_input_samples": getattr(engine, "nonfinite_samples", 0),
        "late_samples_dropped": pipe.fifo.dropped,
        "drop_callbacks": stats.drop_callbacks,
        "algorithmic_latency_samples": engine.latency_samples,
        "algorithmic_latency_ms": 1e3 * engine.latency_samples / SAMPLE_RATE,
        "prefill_frames": pipe.prefill or 0,
        "delay_grown_frames": pipe.grown,
        "delay_grow_events": pipe.grow_events,
        "pipeline_latency_ms": 1e3 * pipe.pipeline_latency_s,
        "device_latency_ms": [1e3 * device_latency[0], 1e3 * device_latency[1]],
        "measured_device_delay_ms": None
        if pipe.stats.input_delay_s is None
        else [1e3 * pipe.stats.input_delay_s, 1e3 * pipe.stats.output_delay_s],
        "resample_quality": args.resample_quality if rate != SAMPLE_RATE else None,
        "recorded": {"noisy": args.record_noisy, "enhanced": args.record},
        "stop_reason": stop_reason,
    }
