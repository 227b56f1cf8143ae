"""Drive ``stream_infer.py --mic`` through a real JACK server (dummy backend) and record it.

Used by tests/test_jack_e2e.py, tests/test_stream_infer.py and others, and by hand::

    python tests/helpers/jack_harness.py --noisy noisy.wav --checkpoint model.pt [-- extra stream_infer args]

which starts its own ``jackd -d dummy`` (unique server name), runs the program as a subprocess on
the JACK ports, feeds the file into the program's input and records its output in the same JACK
cycle, then prints the measured delay, correlation with the offline enhancement and the
program's summary.

Nothing here imports ``sounddevice``: PortAudio only lists the JACK host API if a server is
running when PortAudio initialises, so the program under test always runs in a fresh process
started after the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "stream_infer.py"
PROGRAM_CLIENT = "PortAudio"  # the JACK client name PortAudio registers (first one on a server)
HARNESS_CLIENT = "fsnet_harness"


class JackUnavailable(RuntimeError):
    """The JACK server could not be started here (the message says why)."""


# A small random-weight model: fast enough for any CI machine, same code paths as the real one.
TINY_CONFIG = {
    "num_mels": 16,
    "encoder_hidden_sizes": (32, 24),
    "bottleneck_hidden_size": 24,
    "bottleneck_num_layers": 1,
    "decoder_hidden_sizes": (32, 32),
    "noisy_num_neighbors": 2,
}


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    import torch

    import fsnet

    torch.manual_seed(seed)
    return fsnet.save_release(fsnet.build_model(TINY_CONFIG), path)


def make_noisy(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: a gliding harmonic tone, syllable-rate envelope, white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    x = 0.15 * voiced * envelope + 0.03 * rng.standard_normal(len(t))
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------- server
@dataclass
class JackServer:
    name: str
    rate: int
    period: int
    proc: subprocess.Popen
    log_path: Path
    mode: str

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients of this server (and never auto-start another one)."""
        env = dict(os.environ)
        env["JACK_DEFAULT_SERVER"] = self.name
        env["JACK_NO_START_SERVER"] = "1"
        return env

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


_counter = 0


def _wait_for_server(name: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll until a client can connect to the server ``name`` (or jackd exits)."""
    import jack

    deadline = time.monotonic() + timeout
    jack.set_error_function(lambda message: None)  # "cannot connect" while it is starting
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                client = jack.Client("fsnet_probe", servername=name, no_start_server=True)
            except jack.JackError:
                time.sleep(0.05)
                continue
            client.close()
            return True
        return False
    finally:
        jack.set_error_function(None)


def _check_portaudio_jack(server: JackServer) -> None:
    """PortAudio (in a fresh process, as the program will be) must offer the JACK host API."""
    code = "import sounddevice as sd; print([a['name'] for a in sd.query_hostapis()])"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=server.env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        raise JackUnavailable("PortAudio initialisation hung with a JACK server running") from exc
    if proc.returncode != 0:
        raise JackUnavailable(f"sounddevice unusable: {proc.stderr.strip().splitlines()[-1:]}")
    if "JACK" not in proc.stdout:
        raise JackUnavailable(
            f"PortAudio was built without JACK support (host APIs {proc.stdout.strip()})"
        )


def start_jackd(
    rate: int = 16000, period: int = 256, log_dir: Path | None = None, timeout: float = 5.0
) -> JackServer:
    """Start ``jackd -d dummy`` under a unique server name; raises JackUnavailable if it cannot.

    ``--no-realtime`` is tried first (needs no privileges, so it starts in any container or CI
    runner), then ``-R``.
    """
    global _counter
    jackd = shutil.which(os.environ.get("FSNET_JACKD", "jackd"))  # FSNET_JACKD: another binary
    if jackd is None:
        raise JackUnavailable("jackd not found (apt-get install jackd2)")
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as exc:
        raise JackUnavailable(f"python JACK client unavailable: {exc}") from exc
    _counter += 1
    name = f"fsnet_test_{os.getpid()}_{_counter}"
    log_dir = Path(log_dir or os.environ.get("TMPDIR", "/tmp"))
    problems = []
    for mode in ("--realtime", "--no-realtime"):
        log_path = log_dir / f"{name}{mode.replace('-', '_')}.log"
        cmd = [
            jackd,
            mode,
            "-n",
            name,
            "-d",
            "dummy",
            "-r",
            str(rate),
            "-p",
            str(period),
            "-C",
            "2",
            "-P",
            "2",
        ]
        env = dict(os.environ, JACK_NO_START_SERVER="1")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        if _wait_for_server(name, proc, timeout):
            server = JackServer(name, rate, period, proc, log_path, mode)
            try:
                _check_portaudio_jack(server)
            except JackUnavailable:
                server.stop()
                raise
            return server
        server = JackServer(name, rate, period, proc, log_path, mode)
        server.stop()
        tail = " | ".join(server.log().strip().splitlines()[-4:])
        problems.append(f"`{' '.join(cmd)}` failed: {tail or 'no output'}")
    raise JackUnavailable("; ".join(problems))


# --------------------------------------------------------------------------------------- harness
class Harness:
    """A JACK client that plays ``feed`` into the program and records the program, cycle-locked.

    The process callback writes ``feed[pos:pos+n]`` to its output port and stores its input
    port's ``n`` samples at the same position, so ``recording[k]`` is what the program returned
    ``k`` samples after the sample ``feed[k]`` went out in the same cycle: the lag of the
    program's output in ``recording`` is the whole round-trip delay.
    """

    def __init__(self, server: JackServer, name: str = HARNESS_CLIENT) -> None:
        import jack

        self.server = server
        self.client = jack.Client(name, servername=server.name, no_start_server=True)
        self.outport = self.client.outports.register("out")
        self.inport = self.client.inports.register("in")
        self.feed = np.zeros(0, dtype=np.float32)
        self.recording = np.zeros(0, dtype=np.float32)
        self.pos = 0
        self.playing = False
        self.done = threading.Event()
        self.mark = 0  # `reached` is set once pos >= mark
        self.reached = threading.Event()
        self.xruns = 0
        self.xrun_cycles: list[int] = []  # harness cycle numbers of xruns (diagnosis)
        self.events: dict[str, int] = {}  # harness cycle when wired / playing started
        self.cycles = 0
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, delay: float) -> None:
        self.xruns += 1
        self.xrun_cycles.append(self.cycles)

    def _process(self, frames: int) -> None:
        self.cycles += 1
        out = self.outport.get_array()
        if not self.playing:
            out.fill(0.0)
            return
        inp = self.inport.get_array()
        start, end = self.pos, min(self.pos + frames, len(self.feed))
        n = end - start
        out[:n] = self.feed[start:end]
        out[n:] = 0.0
        self.recording[start:end] = inp[:n]
        self.pos = end
        if end >= self.mark:
            self.reached.set()
        if end >= len(self.feed):
            self.playing = False
            self.done.set()

    def play(self, signal_: np.ndarray, tail_seconds: float = 1.0, mark: int | None = None) -> None:
        """Start playing ``signal_`` (then ``tail_seconds`` of silence) at the next cycle.

        ``reached`` is set once ``mark`` samples (default: everything) have been played.
        """
        tail = np.zeros(int(tail_seconds * self.server.rate), dtype=np.float32)
        self.feed = np.concatenate((np.asarray(signal_, dtype=np.float32), tail))
        self.recording = np.zeros_like(self.feed)
        self.pos = 0
        self.done.clear()
        self.mark = len(self.feed) if mark is None else min(mark, len(self.feed))
        self.reached.clear()
        self.events["play"] = self.cycles
        self.playing = True

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def program_ports(self, timeout: float = 20.0) -> tuple[list[str], list[str]]:
        """Wait (polling, no fixed sleep) until the program's JACK ports exist."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ins = [
                p.name
                for p in self.client.get_ports(
                    f"^{PROGRAM_CLIENT}[^:]*:in_", is_audio=True, is_input=True
                )
            ]
            outs = [
                p.name
                for p in self.client.get_ports(
                    f"^{PROGRAM_CLIENT}[^:]*:out_", is_audio=True, is_output=True
                )
            ]
            if ins and outs:
                return sorted(ins), sorted(outs)
            time.sleep(0.02)
        raise TimeoutError(f"the program's JACK ports did not appear within {timeout} s")

    def wire(self, ins: list[str], outs: list[str]) -> None:
        """harness:out -> every program input (only); program's first output -> harness:in.

        PortAudio connects its ports to the device's ports (here ``system``) when the stream
        starts; the capture connections are removed so only the harness feeds the program.
        """
        for port in ins:
            for other in self.client.get_all_connections(port):
                self.client.disconnect(other, port)
            self.client.connect(self.outport, port)
        self.client.connect(outs[0], self.inport)
        self.events["wired"] = self.cycles

    def close(self) -> None:
        try:
            self.client.deactivate()
        finally:
            self.client.close()


# --------------------------------------------------------------------------------------- program
@dataclass
class Program:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_started(self, timeout: float) -> bool:
        """True once the program printed its 'listening:' line (the stream is running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.started.wait(0.05):
                return True
            if self.proc.poll() is not None:
                if self.reader:
                    self.reader.join(2)
                return self.started.is_set()
        return False

    def wait_for(self, pattern: str, timeout: float) -> bool:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(regex.search(line) for line in list(self.lines)):
                return True
            if self.proc.poll() is not None:
                if self.reader:
                    self.reader.join(2)
                return any(regex.search(line) for line in self.lines)
            time.sleep(0.02)
        return False

    def finish(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=5)
        if self.reader:
            self.reader.join(5)
        if self.proc.stderr and not self.reader.is_alive():
            self.proc.stderr.close()
        return rc


def start_program(server: JackServer, args: list[str], python: str = sys.executable) -> Program:
    """Run ``stream_infer.py --mic ...`` against ``server`` (stderr collected line by line)."""
    env = server.env
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [python, str(PROGRAM), *args],
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    program = Program(proc)

    def read() -> None:
        for line in proc.stderr:
            program.lines.append(line)
            if line.startswith("listening:"):
                program.started.set()

    program.reader = threading.Thread(target=read, daemon=True)
    program.reader.start()
    return program


def measure_delay(reference: np.ndarray, recording: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples, >= 0) of ``reference`` inside ``recording`` and the normalised correlation there."""
    n = len(reference)
    size = 1 << int(np.ceil(np.log2(n + len(recording))))
    xc = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size)), size)[
        : max_lag + 1
    ]
    lag = int(np.argmax(np.abs(xc)))
    seg = recording[lag : lag + n]
    ref = reference[: len(seg)]
    denom = float(np.linalg.norm(seg) * np.linalg.norm(ref)) or 1.0
    return lag, float(np.dot(seg, ref) / denom)


@dataclass
class LoopResult:
    rc: int
    stderr: str
    summary: dict
    recording: np.ndarray
    harness_xruns: int
    harness_info: dict = field(default_factory=dict)


def run_loop(
    server: JackServer,
    feed: np.ndarray,
    program_args: list[str],
    summary_json: Path,
    tail_seconds: float = 1.0,
    start_timeout: float = 60.0,
    stop_signal: int = signal.SIGINT,
    stop_after_samples: int | None = None,
) -> LoopResult:
    """Start the program on ``server``, wire it to a harness, play ``feed``, stop the program.

    By default the program runs until the harness has played everything (``feed`` + tail),
    then gets SIGINT, so what it writes (summary, recordings) covers the whole signal;
    ``stop_after_samples`` sends ``stop_signal`` once that many samples have been played.
    """
    harness = Harness(server)
    program = start_program(
        server,
        [
            "--mic",
            "--input-device",
            "system",
            "--output-device",
            "system",
            "--summary-json",
            str(summary_json),
            *program_args,
        ],
    )
    try:
        if not program.wait_started(start_timeout):
            rc = program.finish(10)
            raise RuntimeError(f"program did not start (rc={rc}):\n{program.stderr()}")
        ins, outs = harness.program_ports()
        harness.wire(ins, outs)
        harness.play(feed, tail_seconds, mark=stop_after_samples)
        duration = len(harness.feed) / server.rate
        deadline = time.monotonic() + duration * 3 + 10
        # wait on an event set by the process callback: no polling that would take the GIL
        while not harness.reached.wait(0.5):
            if time.monotonic() > deadline or program.proc.poll() is not None:
                raise RuntimeError(
                    f"harness stalled at {harness.pos}/{len(harness.feed)} samples; program:\n{program.stderr()}"
                )
        program.proc.send_signal(stop_signal)
        rc = program.finish(30)
    finally:
        if program.proc.poll() is None:
            program.proc.kill()
            program.finish(5)
        harness.close()
    summary = json.loads(summary_json.read_text()) if summary_json.exists() else {}
    info = {"server": server.mode, "events": harness.events, "xrun_cycles": harness.xrun_cycles}
    return LoopResult(
        rc, program.stderr(), summary, harness.recording[: harness.pos].copy(), harness.xruns, info
    )


# --------------------------------------------------------------------------------------- by hand
def _main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--noisy", required=True, help="WAV fed into the program (resampled to --rate)")
    p.add_argument(
        "--checkpoint", help="model for the program and the offline reference (default: bundled)"
    )
    p.add_argument("--rate", type=int, default=16000, help="JACK server rate")
    p.add_argument("--period", type=int, default=256, help="JACK period (frames)")
    p.add_argument("--workdir", default="/tmp/fsnet_jack_run")
    p.add_argument("program_args", nargs="*", help="extra stream_infer.py arguments (after --)")
    a = p.parse_args()
    import soundfile as sf
    import soxr

    x, sr = sf.read(a.noisy, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != a.rate:
        x = soxr.resample(x, sr, a.rate, quality="VHQ").astype(np.float32)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    args = list(a.program_args) + [
        "--record-noisy",
        str(work / "capture.wav"),
        "--subtype",
        "FLOAT",
    ]
    if a.checkpoint:
        args += ["--checkpoint", a.checkpoint]
    server = start_jackd(a.rate, a.period, log_dir=work)
    print(f"jackd {server.mode} '{server.name}' at {a.rate} Hz, period {a.period}", file=sys.stderr)
    try:
        res = run_loop(server, x, args, work / "summary.json")
    finally:
        server.stop()
    sys.stderr.write(res.stderr)
    sf.write(work / "recording.wav", res.recording, a.rate, subtype="FLOAT")
    if "--passthrough" in args:
        reference = x
    else:
        import fsnet

        model = fsnet.load_model(a.checkpoint)
        reference = fsnet.enhance(
            model, soxr.resample(x, a.rate, 16000, quality="VHQ") if a.rate != 16000 else x
        )
        if a.rate != 16000:
            reference = soxr.resample(reference, 16000, a.rate, quality="VHQ")
    lag, corr = measure_delay(reference, res.recording, a.rate)
    print(
        f"rc={res.rc} harness xruns={res.harness_xruns} round-trip delay={lag} samples "
        f"({1e3 * lag / a.rate:.1f} ms) corr={corr:.4f} (vs offline {'input' if '--passthrough' in args else 'enhance'})"
    )
    print(f"harness: {res.harness_info}")
    print(f"recording: {work / 'recording.wav'}; summary: {work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
