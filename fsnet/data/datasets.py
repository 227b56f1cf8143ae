"""The datasets a training run reads: freshly mixed training examples and the fixed validation pairs.

Every random choice of example ``index`` in epoch ``epoch`` comes from
``numpy.random.default_rng([seed, epoch, index])``: indices are unique across DataLoader workers
and DDP ranks, so workers draw different examples, and the data do not depend on the number of
workers. How an example is mixed is :mod:`fsnet.data.mixing`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fsnet.audio import SAMPLE_RATE
from fsnet.data.batch_mixing import components_item
from fsnet.data.corpus import AudioEntry, ValPair
from fsnet.data.mixing import (
    SPEED_GRID_STEPS,
    Components,
    MixingConfig,
    change_speed,
    group_noise_files,
    mix_components,
    random_eq,
)
from fsnet.data.reading import _resample, load_whole, read_frames, read_segment
from fsnet.errors import FsnetError

log = logging.getLogger("fsnet.data")

SILENT_RMS = 1e-4  # -80 dBFS: a clean segment quieter than this is drawn again
MAX_ATTEMPTS = 20  # draws of a file before giving up on unreadable / silent material
RIR_CACHE_SIZE = 256  # RIRs kept decoded per worker


class _SkipFile(Exception):
    """A file could not be read and was reported; draw another one."""


def _happens(rng: np.random.Generator, probability: float) -> bool:
    """True with ``probability``. Draws nothing when it is 0, so a config that leaves an optional
    augmentation off keeps the exact mixtures it had before that augmentation existed."""
    return probability > 0.0 and rng.random() < probability


def _seed_words(*values: int) -> list[int]:
    return [int(v) & 0xFFFFFFFFFFFFFFFF for v in values]


class TrainingMixtures(Dataset):
    """Map-style dataset of ``samples_per_epoch`` freshly mixed ``(noisy, target)`` examples, or
    with ``components`` set, what each is mixed from (mixed on the device, ``data.mix_on``).

    Example ``index`` of epoch ``epoch`` is a pure function of ``(seed, epoch, index)``. Call
    ``set_epoch`` before the epoch's DataLoader iterator is created (workers copy the dataset
    then, so the DataLoader must not use persistent workers).
    """

    def __init__(
        self,
        clean: Sequence[AudioEntry],
        noise: Sequence[AudioEntry],
        rir: Sequence[AudioEntry] = (),
        mixing: MixingConfig | None = None,
        samples_per_epoch: int = 1000,
        seed: int = 0,
        on_bad_file: str = "skip",
    ):
        if not clean or not noise:
            raise FsnetError("training needs at least one clean and one noise file")
        self.clean = list(clean)
        self.noise = list(noise)
        self.rir = list(rir)
        self.mixing = mixing or MixingConfig()
        self.samples_per_epoch = int(samples_per_epoch)
        if self.samples_per_epoch < 1:
            raise FsnetError(f"data.samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.seed = int(seed)
        self.on_bad_file = on_bad_file
        self.epoch = 0
        self.components = False  # items: finished mixtures (False) or their components (True)
        self._bad: set[str] = set()
        self._rir_cache: dict[str, np.ndarray] = {}
        self.noise_groups, self.noise_group_probs = group_noise_files(self.noise, self.mixing)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | dict[str, Any]:
        """``(noisy, target)`` tensors; with ``components`` set, what they are mixed from
        (:func:`~fsnet.data.batch_mixing.components_item`, batched by ``collate_components``)."""
        if self.components:
            return components_item(self.draw(index)[0])
        noisy, target, _ = self.generate(index)
        return torch.from_numpy(noisy), torch.from_numpy(target)

    # ---------------------------------------------------------------- one example
    def generate(
        self, index: int, epoch: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(noisy, target, info)`` of example ``index``: float32 ``[segment samples]`` each, at
        ``mixing.sample_rate``; ``info`` records every random choice."""
        components, info = self.draw(index, epoch)
        noisy, target = mix_components(components, self.mixing)
        return noisy, target, info

    def draw(self, index: int, epoch: int | None = None) -> tuple[Components, dict[str, Any]]:
        """``(components, info)`` of example ``index``: what it is mixed from, and every choice.

        The order of the draws is part of the data: changing it changes every mixture.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(_seed_words(self.seed, epoch, index))
        m = self.mixing
        seg = m.segment_samples
        rir = None
        rir_path = None
        if self.rir and rng.random() < m.reverb_probability:
            rir_path, rir = self._draw_rir(rng)
        pre_roll = 0 if rir is None else rir.shape[0] - 1
        clean_steps, clean_path, clean, lead = self._draw_speech(rng, seg, pre_roll)
        noise_steps = self._draw_speed(rng, m.noise_speed_probability)
        if noise_steps:
            factor = 1.0 + noise_steps / SPEED_GRID_STEPS
            noise_paths, noise = self._draw_noise(rng, math.ceil(seg * factor) + 2)
            noise = change_speed(noise, noise_steps, seg)
        else:
            noise_paths, noise = self._draw_noise(rng, seg)
        snr = float(rng.uniform(*m.snr_range_db))
        level = float(
            rng.uniform(
                m.target_level_dbfs - m.target_level_jitter_db,
                m.target_level_dbfs + m.target_level_jitter_db,
            )
        )
        # Drawn after everything else, so switching the colouring on keeps each example's files,
        # speeds, SNR and level.
        clean_eq = self._draw_eq(rng, m.clean_eq_probability)
        noise_eq = self._draw_eq(rng, m.noise_eq_probability)
        overlay_paths: list[str] = []
        overlay = overlay_db = None
        if _happens(rng, m.noise_overlay_probability):
            overlay_paths, overlay = self._draw_noise(rng, seg)
            overlay_db = float(rng.uniform(*m.noise_overlay_level_range_db))
        components = Components(
            clean, lead, rir, noise, overlay, overlay_db, snr, level, clean_eq, noise_eq
        )
        info = {
            "clean": clean_path,
            "noise": noise_paths,
            "rir": rir_path,
            "snr_db": snr,
            "level_dbfs": level,
            "clean_speed": 1.0 + clean_steps / SPEED_GRID_STEPS,
            "noise_speed": 1.0 + noise_steps / SPEED_GRID_STEPS,
            "clean_eq": None if clean_eq is None else [c.tolist() for c in clean_eq],
            "noise_eq": None if noise_eq is None else [c.tolist() for c in noise_eq],
            "noise_overlay": overlay_paths,
            "noise_overlay_db": overlay_db,
            "epoch": epoch,
            "index": index,
        }
        return components, info

    def _draw_speech(
        self, rng: np.random.Generator, seg: int, pre_roll: int
    ) -> tuple[int, str, np.ndarray, int]:
        """``(speed steps, path, samples, lead)``: a clean segment, sped up or slowed down with
        ``clean_speed_probability``; ``lead`` samples of context come before the segment."""
        clean_steps = self._draw_speed(rng, self.mixing.clean_speed_probability)
        if not clean_steps:
            return (0, *self._draw_clean(rng, seg, pre_roll))
        # Read enough source samples for seg + pre_roll output samples at the new speed.
        factor = 1.0 + clean_steps / SPEED_GRID_STEPS
        clean_path, clean, lead = self._draw_clean(
            rng, math.ceil(seg * factor) + 2, math.ceil(pre_roll * factor)
        )
        lead_out = int(lead / factor)
        clean = change_speed(clean, clean_steps, lead_out + seg)
        return clean_steps, clean_path, clean, lead_out

    # ---------------------------------------------------------------- drawing files
    def _draw_speed(self, rng: np.random.Generator, probability: float) -> int:
        """Grid steps of a speed factor (0 = unchanged), with ``probability``."""
        if not _happens(rng, probability):
            return 0
        k_low, k_high = self.mixing.speed_steps()
        return int(rng.integers(k_low, k_high + 1))

    def _draw_eq(
        self, rng: np.random.Generator, probability: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A random colouring filter ``(b, a)`` with ``probability``, else None."""
        if not _happens(rng, probability):
            return None
        return random_eq(rng, self.mixing.eq_coefficient_limit)

    def _read(self, kind: str, entry: AudioEntry, start: int, length: int) -> np.ndarray:
        try:
            return read_segment(entry, start, length, self.mixing.sample_rate)
        except Exception as exc:  # noqa: BLE001 - any decode problem: report by path
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if self.on_bad_file == "error":
                raise FsnetError(f"cannot read {kind} file {entry.path}: {reason}") from None
            if entry.path not in self._bad:
                self._bad.add(entry.path)
                log.warning("skipping unreadable %s file %s: %s", kind, entry.path, reason)
            raise _SkipFile from None

    def _pick(
        self,
        rng: np.random.Generator,
        groups: Sequence[Sequence[AudioEntry]],
        kind: str,
        group_probs: np.ndarray | None = None,
    ) -> AudioEntry:
        """A readable file: a group drawn (uniformly unless ``group_probs``; no draw when there is
        one), then a file in it, uniformly."""
        for _ in range(MAX_ATTEMPTS):
            if len(groups) == 1:
                group = groups[0]
            elif group_probs is None:
                group = groups[int(rng.integers(len(groups)))]
            else:
                group = groups[int(rng.choice(len(groups), p=group_probs))]
            entry = group[int(rng.integers(len(group)))]
            if entry.path not in self._bad:
                return entry
        raise FsnetError(
            f"could not find a readable {kind} file in {MAX_ATTEMPTS} draws (see the warnings above)"
        )

    def _draw_clean(
        self, rng: np.random.Generator, seg: int, pre_roll: int
    ) -> tuple[str, np.ndarray, int]:
        """``(path, samples, lead)``: ``lead`` samples of context before the segment, then ``seg``."""
        m = self.mixing
        for _attempt in range(MAX_ATTEMPTS):
            entry = self._pick(rng, (self.clean,), "clean")
            length = entry.length_at(m.sample_rate)
            try:
                if length >= seg:
                    start = int(rng.integers(0, length - seg + 1))
                    lead = min(pre_roll, start)
                    x = self._read("clean", entry, start - lead, seg + lead)
                else:
                    lead = 0
                    whole = self._read("clean", entry, 0, length)
                    if m.short_clean == "loop":
                        reps = -(-seg // length) + 1
                        offset = int(rng.integers(0, length))
                        x = np.tile(whole, reps)[offset : offset + seg]
                    else:
                        offset = int(rng.integers(0, seg - length + 1))
                        x = np.zeros(seg, dtype=np.float32)
                        x[offset : offset + length] = whole
            except _SkipFile:
                continue
            if math.sqrt(float(np.mean(np.square(x[lead:], dtype=np.float64)))) >= SILENT_RMS:
                return entry.path, x, lead
        raise FsnetError(
            f"no usable (readable, non-silent) clean segment found in {MAX_ATTEMPTS} draws"
        )

    def _draw_noise(self, rng: np.random.Generator, seg: int) -> tuple[list[str], np.ndarray]:
        """Random noise files joined by silences, starting at a random point of the first."""
        m = self.mixing
        gap_low, gap_high = m.silence_between_noises_seconds
        for _attempt in range(MAX_ATTEMPTS):
            parts: list[np.ndarray] = []
            paths: list[str] = []
            remaining = seg
            failures = 0
            while remaining > 0:
                entry = self._pick(rng, self.noise_groups, "noise", self.noise_group_probs)
                length = entry.length_at(m.sample_rate)
                start = int(rng.integers(0, length)) if not parts else 0
                count = min(length - start, remaining)
                try:
                    part = self._read("noise", entry, start, count)
                except _SkipFile:
                    failures += 1
                    if failures > MAX_ATTEMPTS:
                        raise FsnetError(
                            f"too many unreadable noise files (last: {entry.path})"
                        ) from None
                    continue
                if m.noise_gain_jitter_db > 0.0:
                    jitter = m.noise_gain_jitter_db
                    part = part * np.float32(10.0 ** (rng.uniform(-jitter, jitter) / 20.0))
                parts.append(part)
                paths.append(entry.path)
                remaining -= count
                if remaining > 0:
                    # a fixed gap draws nothing, so such configs mix what they always did
                    seconds = gap_low if gap_low == gap_high else rng.uniform(gap_low, gap_high)
                    silence = min(int(round(seconds * m.sample_rate)), remaining)
                    if silence:
                        parts.append(np.zeros(silence, dtype=np.float32))
                        remaining -= silence
            noise = np.concatenate(parts)
            if np.any(noise):
                return paths, noise
        return paths, noise  # all-silent noise: the mixture is then the clean target alone

    def _draw_rir(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        for _attempt in range(MAX_ATTEMPTS):
            entry = self._pick(rng, (self.rir,), "RIR")
            rir = self._rir_cache.get(entry.path)
            if rir is None:
                try:
                    data = read_frames(entry, 0, entry.frames)
                    if entry.sample_rate != self.mixing.sample_rate:
                        data = _resample(data.T, entry.sample_rate, self.mixing.sample_rate).T
                except Exception as exc:  # noqa: BLE001
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    if self.on_bad_file == "error":
                        raise FsnetError(f"cannot read RIR file {entry.path}: {reason}") from None
                    self._bad.add(entry.path)
                    log.warning("skipping unreadable RIR file %s: %s", entry.path, reason)
                    continue
                if not np.any(data):
                    self._bad.add(entry.path)
                    log.warning("skipping silent RIR file %s", entry.path)
                    continue
                rir = np.ascontiguousarray(data.T, dtype=np.float32)  # [channels, taps]
                if len(self._rir_cache) >= RIR_CACHE_SIZE:
                    self._rir_cache.pop(next(iter(self._rir_cache)))
                self._rir_cache[entry.path] = rir
            channel = int(rng.integers(rir.shape[0]))
            return entry.path, rir[channel]
        raise FsnetError(f"could not read any RIR in {MAX_ATTEMPTS} draws (see the warnings above)")


class ValidationPairs(Dataset):
    """The fixed synthetic test set: ``{"noisy", "clean", "name"}`` per pair, whole files as
    float32 tensors ``[N]`` at ``sample_rate``."""

    def __init__(self, pairs: Sequence[ValPair], sample_rate: int = SAMPLE_RATE):
        self.pairs = list(pairs)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        noisy = load_whole(pair.noisy, self.sample_rate)
        clean = load_whole(pair.clean, self.sample_rate)
        if noisy.shape[0] != clean.shape[0]:  # DNS pairs are equal; be lenient with others
            n = min(noisy.shape[0], clean.shape[0])
            noisy, clean = noisy[:n], clean[:n]
        return {
            "noisy": torch.from_numpy(noisy),
            "clean": torch.from_numpy(clean),
            "name": pair.name,
        }


def collate_validation(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad a batch of pairs on the right: ``noisy``/``clean`` ``[B, N_max]``; ``lengths``
    ``[B]`` keeps the true lengths in samples."""
    lengths = torch.tensor([item["noisy"].shape[0] for item in items], dtype=torch.long)
    size = int(lengths.max())
    noisy = torch.zeros(len(items), size)
    clean = torch.zeros(len(items), size)
    for i, item in enumerate(items):
        noisy[i, : lengths[i]] = item["noisy"]
        clean[i, : lengths[i]] = item["clean"]
    return {
        "noisy": noisy,
        "clean": clean,
        "lengths": lengths,
        "names": [item["name"] for item in items],
    }


class UnpaddedDistributedSampler(torch.utils.data.distributed.DistributedSampler):
    """Rank r gets items r, r + W, ... with no duplicates, so validation metrics count each pair once."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False
        )

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def _worker_init(_worker_id: int) -> None:
    # Example randomness comes from (seed, epoch, index); only keep torch from oversubscribing cores.
    torch.set_num_threads(1)
