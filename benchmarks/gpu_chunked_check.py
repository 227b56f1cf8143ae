"""GPU check of the chunked ``fsnet.enhance`` (what ``evaluate.py`` runs): bounded GPU memory for
a long input, and the same numbers as the whole-signal forward.

    python benchmarks/gpu_chunked_check.py            # bundled model, CUDA: about a minute
    python benchmarks/gpu_chunked_check.py --device cpu --long-seconds 120   # smoke run, no GPU

1. fp32, ``--compare-seconds`` of random input: ``enhance`` in chunks (the default) equals the
   whole-signal forward (``chunk_seconds=None``) to 1e-5. TF32 is switched off for it (cuDNN
   allows it by default: its 10-bit mantissa moves outputs by ~1e-3, chunked or not).
2. bf16 autocast (``evaluate.py precision=bf16``): the same comparison, printed, not asserted:
   bf16 keeps 8 bits of mantissa, so chunked and whole differ by bf16's own rounding (on CPU,
   12 s: 3e-4 absolute), and the chunked output is compared with fp32 as an SNR (CPU: 18 dB).
3. ``--long-seconds`` (default one hour) of random input through ``enhance`` in chunks: time
   and peak GPU memory (``torch.cuda.max_memory_allocated`` above the model); its first
   ``--compare-seconds`` minus one must equal the short run's output to 1e-5 (causal model).

Exits non-zero when an asserted check fails. Not a test: the timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import fsnet
from fsnet.enhance import DEFAULT_CHUNK_SECONDS

TOLERANCE_FP32 = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--checkpoint", default=None, help="release file; default: bundled model")
    parser.add_argument("--compare-seconds", type=float, default=60.0, help="fp32/bf16 check input")
    parser.add_argument("--long-seconds", type=float, default=3600.0, help="long input (seconds)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = fsnet.load_model(args.checkpoint, device=args.device)
    rate = model.config.sample_rate
    rng = np.random.default_rng(0)
    x_long = rng.uniform(-0.5, 0.5, int(args.long_seconds * rate)).astype(np.float32)
    x = x_long[: int(args.compare_seconds * rate)]
    if x.shape[0] < int(args.compare_seconds * rate):
        parser.error("--long-seconds must be at least --compare-seconds")
    results: dict = {"device": device_name(args.device), "torch": torch.__version__}
    fsnet.enhance(model, x[:rate])  # warm-up: cuDNN plans, allocator

    whole, results["whole_fp32"] = measured(args.device, lambda: enhance(model, x, None))
    chunked, results["chunked_fp32"] = measured(args.device, lambda: enhance(model, x))
    results["fp32_max_abs_diff"] = float(np.abs(chunked - whole).max())

    with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
        whole_bf16, _ = measured(args.device, lambda: enhance(model, x, None))
        chunked_bf16, results["chunked_bf16"] = measured(args.device, lambda: enhance(model, x))
    results["bf16_chunked_vs_whole_max_abs_diff"] = float(np.abs(chunked_bf16 - whole_bf16).max())
    results["bf16_chunked_snr_vs_fp32_db"] = snr_db(whole, chunked_bf16)

    y_long, results["chunked_long_fp32"] = measured(args.device, lambda: enhance(model, x_long))
    prefix = x.shape[0] - rate  # the last second of the short run misses the look-ahead's input
    results["long_prefix_max_abs_diff"] = float(np.abs(y_long[:prefix] - chunked[:prefix]).max())
    results["long_finite"] = bool(np.isfinite(y_long).all())

    print(json.dumps(results, indent=2))
    failures = [
        f"{key} = {results[key]:.3g} > {TOLERANCE_FP32}"
        for key in ("fp32_max_abs_diff", "long_prefix_max_abs_diff")
        if not results[key] <= TOLERANCE_FP32
    ]
    if not results["long_finite"]:
        failures.append("the long output has non-finite samples")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    long_run = results["chunked_long_fp32"]
    print(
        f"{args.long_seconds:g} s in chunks: {long_run['seconds']:.1f} s, peak GPU memory above "
        f"the model {long_run['peak_mib']:.0f} MiB; {args.compare_seconds:g} s whole-signal "
        f"forward: {results['whole_fp32']['peak_mib']:.0f} MiB; fp32 chunked vs whole "
        f"{results['fp32_max_abs_diff']:.2g}; bf16 chunked vs whole "
        f"{results['bf16_chunked_vs_whole_max_abs_diff']:.2g} "
        f"(SNR vs fp32 {results['bf16_chunked_snr_vs_fp32_db']:.1f} dB)"
    )
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))
    print("OK")


def enhance(model, x: np.ndarray, chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS):
    """``fsnet.enhance`` as ``evaluate.py`` calls it (numpy in, numpy out)."""
    return fsnet.enhance(model, x, chunk_seconds=chunk_seconds)


def measured(device: str, work) -> tuple[np.ndarray, dict]:
    """``work()``'s result and its ``{"seconds", "peak_mib"}`` (GPU memory above what was
    allocated before it; 0 on CPU)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    y = work()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else 0.0
    return y, {"seconds": seconds, "peak_mib": peak}


def snr_db(reference: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.sum((y.astype(np.float64) - reference) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(noise, 1e-30))


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


if __name__ == "__main__":
    main()
