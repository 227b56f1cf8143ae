"""Examples per second that ONE DataLoader worker delivers, mixing in the loader or not, and the
time of the batched mixer; how many loader cores an 8-GPU node then needs.

    python benchmarks/loader_throughput.py                 # CPU: worker rates + mixer on the CPU
    python benchmarks/loader_throughput.py --device cuda   # the same, mixer timed on the GPU

A worker is one process with one thread (as ``fsnet.data.datasets._worker_init`` sets), timed
in this process: ``TrainingMixtures.__getitem__`` for every example plus the batch's collate, as a
DataLoader worker runs them. ``loader`` = ``data.mix_on=loader`` (reads, draws and mixes each
example with numpy); ``device`` = ``data.mix_on=device`` (reads and draws only; the mixing is
``fsnet.data.batch_mixing.mix_batch`` on the training device, timed separately per batch).
The corpus is synthetic with DNS-like lengths (clean files 10-30 s, noise 10 s, RIRs 0.3-1 s,
16-bit WAV), written to a temporary folder and so read from the page cache: a disk that is
slower than that adds to both modes alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one worker = one thread, numpy/scipy included
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import noise_like, rir_like, speech_like  # noqa: E402

from fsnet.data import MixingConfig, TrainingMixtures, scan_corpus  # noqa: E402
from fsnet.data.batch_mixing import collate_components, mix_batch  # noqa: E402
from fsnet.data.datasets import _worker_init  # noqa: E402

SAMPLE_RATE = 16000
# the training rate to feed: 2x the original's bare step (3,995 audio-s/s on one H200), in
# examples of 3.072 s per second per GPU
TARGET_EXAMPLES_PER_GPU = 2 * 3995 / 3.072
GPUS_PER_NODE = 8
PRESETS = {
    "dns": {},  # the DNS recipe: reverberation with probability 0.75, nothing else
    "busy": {  # every augmentation on (the debian_audio recipe's kind of mixing)
        "clean_speed_probability": 0.5,
        "noise_speed_probability": 0.5,
        "clean_eq_probability": 0.5,
        "noise_eq_probability": 0.5,
        "noise_gain_jitter_db": 6.0,
        "noise_overlay_probability": 0.5,
    },
}


def write_corpus(root: Path, n_clean: int, n_noise: int, n_rir: int, seed: int = 0) -> None:
    """Clean files 10-30 s, noise 10 s, RIRs 0.3-1 s, 16-bit WAV at 16 kHz."""
    rng = np.random.default_rng(seed)

    def write(path: Path, x: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")

    for i in range(n_clean):
        write(root / "clean" / f"book_{i:05d}.wav", speech_like(rng, rng.uniform(10, 30)))
    for i in range(n_noise):
        write(root / "noise" / f"noise_{i:05d}.wav", noise_like(rng, 10.0))
    for i in range(n_rir):
        write(root / "rir" / f"rir_{i:05d}.wav", rir_like(rng, rng.uniform(0.3, 1.0)))
    # scan_corpus wants a validation set; one pair is enough
    for kind, x in (("clean", speech_like(rng, 2.0)), ("noisy", noise_like(rng, 2.0))):
        name = "clean_fileid_0.wav" if kind == "clean" else "book_00000_snr5_tl-25_fileid_0.wav"
        write(root / "test_set" / "synthetic" / "no_reverb" / kind / name, x)


def worker_rate(
    ds: TrainingMixtures, components: bool, examples: int, batch: int
) -> tuple[float, float]:
    """Examples per second of one single-threaded worker, ``(per CPU second, per wall second)``:
    items, then the batch's collate. CPU seconds (user + system, file reads included) are what a
    loader core must supply, and do not count the time other processes on a shared machine take."""
    ds.components = components
    collate = collate_components if components else default_collate
    ds[0]  # decode the first RIRs and warm the caches outside the timing
    cpu, wall = time.process_time(), time.perf_counter()
    for first in range(1, examples + 1, batch):
        collate([ds[i] for i in range(first, min(first + batch, examples + 1))])
    return examples / (time.process_time() - cpu), examples / (time.perf_counter() - wall)


def dataloader_rate(ds: TrainingMixtures, components: bool, examples: int, batch: int) -> float:
    """Examples per wall second through a real DataLoader with ONE worker process (its start and
    first batch left out): the worker's work plus handing batches to this process."""
    ds.components = components
    loader = DataLoader(
        ds,
        batch_size=batch,
        num_workers=1,
        collate_fn=collate_components if components else None,
        worker_init_fn=_worker_init,
        sampler=range(examples + batch),
        drop_last=True,
    )
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    count = sum(len(b["noise"] if components else b[0]) for b in batches)
    return count / (time.perf_counter() - start)


def mixer_ms(ds: TrainingMixtures, device: str, batch: int, repeats: int) -> float:
    """Milliseconds of ``mix_batch`` per batch on ``device`` (after the transfer), the median of
    ``repeats`` batches."""
    ds.components = True
    components = collate_components([ds[i] for i in range(batch)])
    components = {k: v.to(device) for k, v in components.items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        mix_batch(components, ds.mixing)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mix_batch(components, ds.mixing)
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=288, help="examples timed per mode")
    parser.add_argument("--batch", type=int, default=72, help="batch size (collate, mixer)")
    parser.add_argument("--device", default="cpu", help="where the mixer is timed: cpu | cuda")
    parser.add_argument("--mixer-threads", type=int, default=1, help="torch threads, CPU mixer")
    parser.add_argument("--repeats", type=int, default=5, help="mixer batches timed")
    parser.add_argument(
        "--dataloader", action="store_true", help="also time a real DataLoader, one worker"
    )
    parser.add_argument("--preset", choices=[*PRESETS, "all"], default="all")
    parser.add_argument("--corpus", type=Path, help="reuse/write the synthetic corpus here")
    parser.add_argument("--files", type=int, nargs=3, default=[200, 100, 100],
                        metavar=("CLEAN", "NOISE", "RIR"), help="synthetic corpus size")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.corpus or Path(tmp) / "dns"
        if not (root / "clean").is_dir():
            write_corpus(root, *args.files)
        lists = scan_corpus(root, root / "rir", Path(tmp) / "lists")
        print(
            f"corpus {root}: {len(lists.clean)} clean, {len(lists.noise)} noise,"
            f" {len(lists.rir)} RIR files; {args.examples} examples per mode, batch {args.batch},"
            f" one thread; torch {torch.__version__}"
        )
        target = TARGET_EXAMPLES_PER_GPU * GPUS_PER_NODE
        print(
            f"to feed: {TARGET_EXAMPLES_PER_GPU:,.0f} examples/s per GPU"
            f" (2x the original's 3,995 audio-s/s), {target:,.0f} per {GPUS_PER_NODE}-GPU node"
        )
        for preset in PRESETS if args.preset == "all" else [args.preset]:
            mixing = MixingConfig(**PRESETS[preset])
            ds = TrainingMixtures(lists.clean, lists.noise, lists.rir, mixing, 10**6, seed=0)
            rates = {
                mode: worker_rate(ds, mode == "device", args.examples, args.batch)
                for mode in ("loader", "device")
            }
            through = {
                mode: dataloader_rate(ds, mode == "device", args.examples, args.batch)
                for mode in (("loader", "device") if args.dataloader else ())
            }
            torch.set_num_threads(args.mixer_threads if args.device == "cpu" else 1)
            ms = mixer_ms(ds, args.device, args.batch, args.repeats)
            torch.set_num_threads(1)
            for mode, (rate, wall_rate) in rates.items():
                print(
                    f"[{preset}] mix_on={mode:6s}: {rate:7.1f} examples per CPU-second of one worker"
                    f" ({1e3 / rate:5.2f} ms each; {wall_rate:7.1f} per wall second)"
                    f" -> {math.ceil(target / rate):4d} loader cores per node"
                )
                if mode in through:
                    print(
                        f"[{preset}] mix_on={mode:6s}: {through[mode]:7.1f} examples per wall"
                        " second through a DataLoader with one worker process"
                    )
            per_example = ms / args.batch
            print(
                f"[{preset}] mix_batch on {args.device} ({args.mixer_threads if args.device == 'cpu' else 'GPU'}"
                f" thread(s)): {ms:.1f} ms per batch of {args.batch} ({per_example:.2f} ms"
                f" per example)"
            )


if __name__ == "__main__":
    main()
