"""``train.py`` runs for benchmarks: a synthetic corpus with DNS-like file lengths, the command
line of a run, and what the run left behind (step timing, logged metrics, resolved config).

Used by ``benchmarks/train_speed.py`` (the real loop's speed) and ``benchmarks/train_curves.py``
(fast vs reference training curves). Not imported by fsnet.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CorpusSpec:
    """File counts and lengths of the synthetic corpus (16 kHz, 16-bit WAV as DNS ships).

    DNS 2020's clean speech comes in files of about 10-30 s, its noise in clips of about 10 s, and
    room impulse responses last a fraction of a second to a second; a training example reads a
    3.072 s window of one clean file, one or more noise files and maybe a RIR, so these lengths
    (not the counts) set what reading costs. The counts only need to exceed what a page cache makes
    trivial to index; the data rarely leaves the page cache in either case.
    """

    n_clean: int = 240  # clean speech files
    clean_seconds: tuple[float, float] = (10.0, 30.0)  # length of each, uniform in [low, high] s
    n_noise: int = 120  # noise files
    noise_seconds: tuple[float, float] = (8.0, 12.0)  # s
    n_rir: int = 60  # room impulse responses
    rir_seconds: tuple[float, float] = (0.3, 1.0)  # s
    n_val: int = 4  # validation pairs per subset (no_reverb, with_reverb)
    val_seconds: float = 4.0  # s per validation utterance
    seed: int = 0

    @classmethod
    def tiny(cls) -> CorpusSpec:
        """A few short files: CPU smoke runs."""
        return cls(6, (4.0, 6.0), 4, (3.0, 4.0), 3, (0.3, 0.5), 2, 2.0)


def _write_file(kind: str, index: int, path: str, spec: CorpusSpec) -> None:
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import noise_like, rir_like, speech_like

    rng = np.random.default_rng([spec.seed, ("clean", "noise", "rir").index(kind), index])
    low, high = getattr(spec, f"{kind}_seconds")
    seconds = float(rng.uniform(low, high))
    make = {"clean": speech_like, "noise": noise_like, "rir": rir_like}[kind]
    x = make(rng, seconds)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, 16000, subtype="PCM_16")


def make_corpus(root: Path, spec: CorpusSpec, workers: int | None = None) -> Path:
    """Write (or reuse, if ``root`` holds one of the same spec) a DNS-layout corpus under ``root``:
    ``clean/``, ``noise/``, ``rir/`` and ``test_set/synthetic/`` (tests/conftest.py's layout)."""
    root = Path(root)
    marker = root / "corpus.json"
    wanted = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_fake_dns_tree

    t0 = time.perf_counter()
    make_fake_dns_tree(
        root, n_clean=0, n_noise=0, n_rir=0, n_val=spec.n_val, val_seconds=spec.val_seconds
    )
    jobs = [
        *(
            ("clean", i, root / "clean" / f"spk{i % 20}" / f"book_{i:05d}.wav")
            for i in range(spec.n_clean)
        ),
        *(("noise", i, root / "noise" / f"noise_{i:04d}.wav") for i in range(spec.n_noise)),
        *(("rir", i, root / "rir" / f"rir_{i:03d}.wav") for i in range(spec.n_rir)),
    ]
    workers = workers or min(16, os.cpu_count() or 1)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        for future in [pool.submit(_write_file, k, i, str(p), spec) for k, i, p in jobs]:
            future.result()
    marker.write_text(wanted)
    print(f"corpus: {len(jobs)} files under {root} in {time.perf_counter() - t0:.1f} s", flush=True)
    return root


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` then ``extra``, leaving out the base entries whose key ``extra`` sets (Hydra
    refuses a key given twice)."""
    taken = {_key(o) for o in extra}
    return [o for o in base if _key(o) not in taken] + list(extra)


def train_command(
    corpus: Path,
    run_dir: Path,
    steps: int,
    extra: list[str],
    *,
    device: str = "cuda",
    workers: int = 12,
    timer_warmup: int = 50,
    seed: int = 0,
) -> list[str]:
    """``python train.py ...`` on ``corpus`` for ``steps`` steps into ``run_dir``, timed by
    ``StepTimer``, CSV logs only, no sanity validation, no checkpoints or release file; ``extra``
    overrides win."""
    base = [
        "recipe=dns",
        f"recipe.root={corpus}",
        f"recipe.rir_root={corpus / 'rir'}",
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        f"data.num_workers={workers}",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        "export_release=false",
        "callbacks.model_checkpoint=null",  # measurements only: no checkpoint files
        "callbacks.last_checkpoint=null",
        "+trainer.enable_checkpointing=false",  # nor Lightning's default one
        "resume=false",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.step_timer._target_=step_timer.StepTimer",
        f"+callbacks.step_timer.path={run_dir / 'step_times.json'}",
        f"+callbacks.step_timer.warmup_steps={timer_warmup}",
    ]
    return [sys.executable, "train.py", *merge_overrides(base, extra)]


def run_train(command: list[str], run_dir: Path, timeout_s: float) -> float:
    """Run ``command`` in the repository, output to ``run_dir/train_stdout.txt``; wall seconds.

    Raises RuntimeError with the log's tail if it fails or runs past ``timeout_s``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "train_stdout.txt"
    # step_timer is imported from benchmarks/ as a top-level module: a namespace package
    # "benchmarks" would lose to any regular package of that name installed elsewhere.
    path = os.pathsep.join(p for p in (str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("HYDRA_FULL_ERROR", None)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        # A session of its own, so that a stop takes its loader workers with it.
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout_s)
            failed = f"exit status {code}" if code else ""
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            failed = f"still running after {timeout_s:.0f} s (stopped)"
    if failed:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"train.py {failed}; log {log}:\n{tail}")
    return time.perf_counter() - t0


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Rows of the run's CSV logger (``metrics.csv``), in order."""
    rows: list[dict[str, str]] = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        with open(path, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def series(rows: list[dict[str, str]], name: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of one logged metric."""
    steps, values = [], []
    for row in rows:
        if row.get(name) not in (None, ""):
            steps.append(int(float(row.get("step") or 0)))
            values.append(float(row[name]))
    return steps, values


def resolved_config(run_dir: Path) -> Any:
    """The run's composed Hydra config (``.hydra/config.yaml``) as an OmegaConf object."""
    from omegaconf import OmegaConf

    return OmegaConf.load(run_dir / ".hydra" / "config.yaml")


def step_times(run_dir: Path) -> dict[str, Any]:
    """What ``StepTimer`` wrote: ``steps``, ``seconds``, ``batch_end_seconds``."""
    return json.loads((run_dir / "step_times.json").read_text())
