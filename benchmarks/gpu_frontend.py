"""Front end for a batch of streams on the GPU (STFT frame + magnitude + mel), against librosa on CPU.

    python benchmarks/gpu_frontend.py gpu --streams 1 1024 10240 --out DIR       # on the GPU machine
    python benchmarks/gpu_frontend.py librosa --streams 1 1024 10240 --out DIR   # on a CPU, same DIR

For B streams, one hop: the newest 512-sample window of every stream, already on the GPU, goes
through the model's own ``stft.analyze`` and ``to_mel`` (no host round trip; CUDA events, eager
and as a CUDA graph); the mel frames are saved to DIR. The ``librosa`` step rebuilds the same
windows (same seed), runs librosa's STFT and HTK mel filters on the CPU in float64, times them and
reports the largest difference from the saved GPU frames. The GPU image has no librosa, hence two
steps. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import fsnet


def windows_for(streams: int, n_fft: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(streams).standard_normal((streams, n_fft))).astype(
        np.float32
    )


def gpu_ms(fn, iters: int = 200) -> float:
    for _ in range(10):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def run_gpu(streams: int, out_dir: Path) -> dict:
    model = fsnet.build_model().cuda().eval()
    cfg = model.config
    windows = torch.from_numpy(windows_for(streams, cfg.n_fft)).cuda()
    mel = torch.empty(streams, cfg.num_mels, 1, device="cuda")

    @torch.inference_mode()
    def front_end(windows=windows, mel=mel):
        spec = model.stft.analyze(windows[:, None, :])  # [B, F, 1]
        mel.copy_(model.to_mel(spec.abs()))

    eager = gpu_ms(front_end)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        front_end()
    graphed = gpu_ms(graph.replay)
    graph.replay()
    np.save(out_dir / f"gpu_mel_{streams}.npy", mel[:, :, 0].cpu().numpy())
    return {
        "streams": streams,
        "gpu_eager_ms": eager,
        "gpu_graph_ms": graphed,
        "device": torch.cuda.get_device_name(),
    }


def run_librosa(streams: int, out_dir: Path) -> dict:
    import librosa

    cfg = fsnet.ModelConfig()
    windows = windows_for(streams, cfg.n_fft).astype(np.float64)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fb = librosa.filters.mel(
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            n_mels=cfg.num_mels,
            fmin=0,
            fmax=cfg.sample_rate / 2,
            htk=True,
            norm=None,
        )
        spec = librosa.stft(
            windows, n_fft=cfg.n_fft, hop_length=cfg.hop_samples, window="hann", center=False
        )  # [B, F, 1]
        reference = np.einsum("mf,bf->bm", fb, np.abs(spec[:, :, 0]))
        times.append(1e3 * (time.perf_counter() - t0))
    frames = out_dir / f"gpu_mel_{streams}.npy"
    if not frames.exists():
        raise SystemExit(f"error: {frames} not found; run the gpu step with --out {out_dir} first")
    ours = np.load(frames)
    diff = float(np.abs(ours - reference).max())
    return {
        "streams": streams,
        "librosa_cpu_ms": min(times),
        "max_abs_diff": diff,
        "max_rel_diff": diff / float(np.abs(reference).max()),
        "cpu_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("step", choices=["gpu", "librosa"])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 1024, 10240])
    parser.add_argument("--out", type=Path, required=True, help="folder for the GPU mel frames")
    args = parser.parse_args()
    if args.step == "gpu" and not torch.cuda.is_available():
        raise SystemExit("error: the gpu step needs a CUDA GPU (none found)")
    args.out.mkdir(parents=True, exist_ok=True)
    for streams in args.streams:
        result = (
            run_gpu(streams, args.out) if args.step == "gpu" else run_librosa(streams, args.out)
        )
        print(json.dumps(result))
        with open(args.out / f"{args.step}.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
