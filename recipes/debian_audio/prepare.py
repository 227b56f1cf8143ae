#!/usr/bin/env python3
"""Build the ``debian_audio`` corpus: real recordings taken from Debian packages.

The prepared directory mirrors the DNS Challenge layout so that one data
module serves both corpora::

    <out>/clean/<source>/*.flac          training speech (16 kHz mono FLAC)
    <out>/noise/<source>/*.ogg           training noise (16 kHz mono OGG/Vorbis)
    <out>/rir/*.flac                     simulated room impulse responses
    <out>/val/clean/*.flac               held-out speakers (raw)
    <out>/val/noise/*.ogg                held-out noise types (raw)
    <out>/val/rir/*.flac                 held-out simulated RIRs
    <out>/test_set/synthetic/{no_reverb,with_reverb}/{clean,noisy}/*.wav
    <out>/manifest.json
    <out>/val_extra/, <out>/test_set/synthetic_extra/   --sources extended(_noise) only: a second
                                         held-out set of its new speakers and noise types

Typical use::

    python recipes/debian_audio/prepare.py --out data/debian_audio
    python recipes/debian_audio/prepare.py --demo      # committed demo set

Everything is deterministic for a given ``--seed`` and set of package
versions.  Downloads (``apt-get download``) and unpacked audio are cached
outside the repository (``~/.cache/fsnet/debian_audio`` by default).

The module-level helpers (levels, trimming, SNR mixing, MIDI writing) are
pure functions without side effects; the tests import them directly.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

# the recipe's own modules, also when prepare.py is loaded by path (the tests)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import extended_sources as xs  # noqa: E402

SR = 16000
RECIPE_NAME = "debian_audio"
RECIPE_VERSION = 1
ANALYSIS_VERSION = 3
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = "data/debian_audio"
DEFAULT_CACHE = "~/.cache/fsnet/debian_audio"
DEFAULT_SEED = 1234

EPS = 1e-12
CLEAN_STORE_LEVEL_DB = -40.0  # active-speech level of the stored clean FLAC (saves ~15% vs -30)
CLEAN_PEAK_LIMIT = 10 ** (-1 / 20)  # stored clean never exceeds -1 dBFS
NOISE_STORE_LEVEL_DB = -25.0  # RMS of the stored noise clips
NOISE_PEAK_LIMIT = 0.6  # headroom for Vorbis overshoot (decoded peaks stay < 1)
MIX_PEAK_LIMIT = 0.99  # fixed mixtures never exceed this (no clipping)
VORBIS_COMPRESSION = 0.9  # soundfile compression_level (1.0 = smallest)
FLAC_COMPRESSION = 1.0  # libFLAC level 8


class RecipeError(RuntimeError):
    """A problem the user can fix; reported as one line, exit status 2."""


# ---------------------------------------------------------------------------
# Pure signal helpers (unit tested)
# ---------------------------------------------------------------------------


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(x * x)))


def rms_db(x) -> float:
    return float(20.0 * np.log10(rms(x) + EPS))


def frame_levels_db(x, frame: int = 320, hop: int = 160) -> np.ndarray:
    """Per-frame RMS level in dBFS (frames of ``frame`` samples every ``hop``)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < frame:
        return np.zeros(0)
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    p = np.mean(x[idx] ** 2, axis=1)
    return 10.0 * np.log10(p + EPS)


def activity_threshold_db(
    levels: np.ndarray, rel_db: float = 40.0, floor_offset_db: float = 10.0
) -> float:
    """Frames louder than this are 'active': well above the floor and within
    ``rel_db`` of the loudest frames."""
    top = float(np.percentile(levels, 99))
    floor = float(np.percentile(levels, 10))
    return max(floor + floor_offset_db, top - rel_db)


def active_level_db(x, frame: int = 320, hop: int = 160) -> float:
    """Mean power of the active frames, in dBFS (a simple speech level)."""
    lev = frame_levels_db(x, frame, hop)
    if lev.size == 0:
        return rms_db(x)
    act = lev > activity_threshold_db(lev)
    if not act.any():
        return rms_db(x)
    return float(10.0 * np.log10(np.mean(10.0 ** (lev[act] / 10.0)) + EPS))


def fade_edges(x, n: int) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of ``n`` samples (copy)."""
    y = np.array(x, dtype=np.float64, copy=True)
    n = min(n, len(y) // 2)
    if n > 0:
        w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        y[:n] *= w
        y[-n:] *= w[::-1]
    return y


def concat_xfade(pieces, n: int) -> np.ndarray:
    """Concatenate with an ``n``-sample linear cross-fade at every join."""
    pieces = [np.asarray(p, dtype=np.float64) for p in pieces if len(p) > 0]
    if not pieces:
        return np.zeros(0)
    out = pieces[0].copy()
    for p in pieces[1:]:
        k = min(n, len(out), len(p))
        if k == 0:
            out = np.concatenate([out, p])
            continue
        w = (np.arange(k) + 0.5) / k
        joined = out[-k:] * (1.0 - w) + p[:k] * w
        out = np.concatenate([out[:-k], joined, p[k:]])
    return out


def trim_and_compact(
    x, sr: int = SR, margin_s: float = 0.1, max_pause_s: float = 0.3, xfade_s: float = 0.005
) -> np.ndarray:
    """Drop leading/trailing silence (keeping ``margin_s`` of room tone) and
    shorten internal pauses longer than ``max_pause_s`` to ``max_pause_s``."""
    x = np.asarray(x, dtype=np.float64)
    frame, hop = int(0.02 * sr), int(0.01 * sr)
    lev = frame_levels_db(x, frame, hop)
    if lev.size == 0:
        return x[:0]
    act = lev > activity_threshold_db(lev)
    if not act.any():
        return x[:0]
    # hang-over: a frame next to an active frame counts as active
    act = act | np.r_[False, act[:-1]] | np.r_[act[1:], False]
    margin = int(margin_s * sr)
    idx = np.flatnonzero(act)
    start = max(0, idx[0] * hop - margin)
    end = min(len(x), idx[-1] * hop + frame + margin)
    keep = []
    cur = start
    half = int(max_pause_s * sr / 2)
    # inactive runs strictly between the first and last active frame
    a = idx[0]
    while a <= idx[-1]:
        if act[a]:
            a += 1
            continue
        b = a
        while b <= idx[-1] and not act[b]:
            b += 1
        ps, pe = a * hop + frame, b * hop  # pause in samples
        if pe - ps > 2 * half:
            keep.append((cur, ps + half))
            cur = pe - half
        a = b
    keep.append((cur, end))
    return concat_xfade([x[s:e] for s, e in keep], int(xfade_s * sr))


def normalize_active_level(x, level_db: float, peak_limit: float = CLEAN_PEAK_LIMIT):
    """Scale so that the active level is ``level_db``; lower the gain if the
    peak would exceed ``peak_limit``.  Returns (y, gain)."""
    x = np.asarray(x, dtype=np.float64)
    g = db_to_gain(level_db - active_level_db(x))
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak * g > peak_limit:
        g = peak_limit / peak
    return x * g, g


def normalize_rms(x, level_db: float, peak_limit: float = MIX_PEAK_LIMIT):
    x = np.asarray(x, dtype=np.float64)
    g = db_to_gain(level_db) / (rms(x) + EPS)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak * g > peak_limit:
        g = peak_limit / peak
    return x * g


def snr_db(clean, noise) -> float:
    return float(
        10.0 * np.log10((np.mean(np.square(clean)) + EPS) / (np.mean(np.square(noise)) + EPS))
    )


def mix_at_snr(
    clean, noise, snr: float, target_level_db: float, peak_limit: float = MIX_PEAK_LIMIT
):
    """DNS-style fixed mixture: ``fsnet.data.mix_at_snr``, the rule training mixes with.

    Fixed pairs refuse silent inputs (a pair without speech or without noise is a build bug).
    16 kHz 1-D float arrays of equal length ``[N]``; returns float64 ``(noisy, clean, noise,
    level_db)``, where ``noise`` is the scaled noise actually in ``noisy`` and ``level_db`` the
    mixture's RMS level (below ``target_level_db`` where ``peak_limit`` scaled the pair down).
    """
    from fsnet.data import mix_at_snr as mix  # fsnet pulls in torch: only when mixing is needed

    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if clean.shape != noise.shape:
        raise ValueError("clean and noise must have the same shape")
    if np.mean(clean**2) <= EPS:
        raise ValueError("clean signal is silent")
    if np.mean(noise**2) <= EPS:
        raise ValueError("noise signal is silent")
    noisy, clean = mix(clean, noise, snr, target_level_db, peak_limit, dtype=np.float64)
    return noisy, clean, noisy - clean, rms_db(noisy)


def to_pcm16(x) -> np.ndarray:
    """Float in [-1, 1) to int16 with rounding; raises instead of clipping."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and (np.max(x) > 32767.5 / 32768 or np.min(x) < -1.0):
        raise ValueError("signal would clip")
    return np.round(x * 32768.0).clip(-32768, 32767).astype(np.int16)


def fit_length(x, n: int, rng: np.random.Generator, xfade: int = 160) -> np.ndarray:
    """Random crop of length ``n``, or loop (with cross-fades) if too short."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) >= n:
        s = int(rng.integers(0, len(x) - n + 1))
        return x[s : s + n].copy()
    pieces, total = [], 0
    while total < n + xfade:
        pieces.append(x)
        total += len(x) - xfade
    return concat_xfade(pieces, xfade)[:n]


def synth_stationary(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) Gaussian noise, unit RMS."""
    w = rng.standard_normal(n)
    if kind == "white":
        y = w
    else:
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1.0 / SR)
        f[0] = f[1]
        f = np.maximum(f, 20.0)  # no DC drift below 20 Hz
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        y = np.fft.irfft(spec, n)
    return y / (rms(y) + EPS)


def parse_fileid(name: str) -> int:
    """The N of ``..._fileid_N.wav``: fsnet.audio.fileid, the rule training and evaluation pair by."""
    from fsnet.audio import fileid  # fsnet pulls in torch: only when a name is parsed

    number = fileid(name)
    if number is None:
        raise ValueError(f"no fileid in {name!r}")
    return number


def noisy_name(snr: int, fileid: int) -> str:
    return f"noisy_snr{int(snr)}_fileid_{int(fileid)}.wav"


def clean_name(fileid: int) -> str:
    return f"clean_fileid_{int(fileid)}.wav"


def stratified_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` draws, one from each of ``n`` equal bins of [lo, hi], shuffled:
    marginally uniform but evenly covering the range."""
    u = (np.arange(n) + rng.uniform(size=n)) / n
    return lo + (hi - lo) * rng.permutation(u)


def stable_seed(*parts) -> int:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little")


def rng_for(*parts) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


# ---------------------------------------------------------------------------
# MIDI writer (standard MIDI file, format 0) and a small random composer
# ---------------------------------------------------------------------------


def _vlq(v: int) -> bytes:
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    return bytes(reversed(out))


def midi_bytes(events, tempo_bpm: float, ticks_per_beat: int = 480) -> bytes:
    """Events: (tick, priority, status_bytes).  Returns a format-0 SMF."""
    tempo = int(round(60_000_000 / tempo_bpm))
    track = bytearray(b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big"))
    last = 0
    for tick, _, data in sorted(events, key=lambda e: (e[0], e[1])):
        track += _vlq(tick - last) + bytes(data)
        last = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "harmonic_minor": [0, 2, 3, 5, 7, 8, 11],
}
PROGRESSIONS = [
    [0, 4, 5, 3],
    [0, 3, 4, 0],
    [0, 5, 3, 4],
    [5, 3, 0, 4],
    [0, 3, 0, 4],
    [1, 4, 0, 0],
    [0, 6, 5, 4],
    [0, 2, 3, 4],
]
# General-MIDI program families (0-based program numbers)
GM_TRAIN_PROGRAMS = (
    list(range(0, 16)) + list(range(24, 32)) + list(range(40, 56)) + list(range(64, 88))
)
GM_VAL_PROGRAMS = (
    list(range(16, 24)) + list(range(56, 64)) + list(range(88, 96)) + list(range(104, 112))
)
GM_BASS_PROGRAMS = list(range(32, 40))


def compose_midi(seed: int, programs, seconds: float = 30.0):
    """A random but musical piece: chord progression, bass line, melody and
    (usually) drums.  Returns (smf_bytes, description)."""
    rng = np.random.default_rng(seed)
    tpb = 480
    bpm = float(rng.uniform(72, 150))
    scale_name = str(rng.choice(sorted(SCALES)))
    scale = SCALES[scale_name]
    root = int(rng.integers(0, 12))
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bar = 4 * tpb
    n_bars = max(2, int(math.ceil(seconds / (4 * 60.0 / bpm))))
    chord_prog = int(rng.choice(programs))
    lead_prog = int(rng.choice(programs))
    bass_prog = int(rng.choice(GM_BASS_PROGRAMS))
    drums = bool(rng.random() < 0.7)
    ev = []

    def note(ch, t, dur, pitch, vel):
        pitch = int(np.clip(pitch, 0, 127))
        vel = int(np.clip(vel, 1, 127))
        ev.append((int(t), 1, (0x90 | ch, pitch, vel)))
        ev.append((int(t + max(1, dur)), 0, (0x80 | ch, pitch, 0)))

    def degree_pitch(deg, base):
        octave, d = divmod(deg, 7)
        return base + root + 12 * octave + scale[d]

    ev += [(0, 0, (0xC0, chord_prog)), (0, 0, (0xC1, bass_prog)), (0, 0, (0xC2, lead_prog))]
    ev += [(0, 0, (0xB0 | ch, 7, int(v))) for ch, v in ((0, 90), (1, 100), (2, 105))]
    chord_style = int(rng.integers(3))  # 0 block, 1 half notes, 2 arpeggio
    bass_style = int(rng.integers(2))
    mel_deg = int(rng.integers(7, 12))
    for b in range(n_bars):
        t0 = b * bar
        deg = prog[b % len(prog)]
        triad = [degree_pitch(deg + k, 48) for k in (0, 2, 4)]
        if chord_style == 0:
            for p in triad:
                note(0, t0, bar - 10, p, rng.integers(55, 80))
        elif chord_style == 1:
            for h in range(2):
                for p in triad:
                    note(0, t0 + h * 2 * tpb, 2 * tpb - 10, p, rng.integers(55, 80))
        else:
            for k in range(8):
                p = triad[k % 3] + (12 if k >= 4 else 0)
                note(0, t0 + k * tpb // 2, tpb // 2 - 5, p, rng.integers(55, 85))
        broot = degree_pitch(deg, 36)
        for q in range(4):
            p = broot + (7 if (bass_style == 1 and q % 2 == 1) else 0)
            note(1, t0 + q * tpb, tpb - 20, p, rng.integers(75, 100))
        t = t0
        while t < t0 + bar:
            dur = int(rng.choice([tpb // 2, tpb, tpb, 2 * tpb], p=[0.35, 0.3, 0.2, 0.15]))
            dur = min(dur, t0 + bar - t)
            if rng.random() > 0.15:
                if (t - t0) % (2 * tpb) == 0:  # strong beat: move to a chord tone
                    choices = [deg + k + 7 * o for k in (0, 2, 4) for o in (1, 2)]
                    mel_deg = int(min(choices, key=lambda c: abs(c - mel_deg)))
                else:
                    mel_deg = int(np.clip(mel_deg + rng.choice([-2, -1, -1, 1, 1, 2]), 5, 16))
                note(2, t, dur - 10, degree_pitch(mel_deg, 48), rng.integers(70, 110))
            t += dur
        if drums:
            for k in range(8):
                tt = t0 + k * tpb // 2
                note(9, tt, 60, 42, rng.integers(50, 80))  # closed hi-hat
                if k in (0, 4) or (k == 5 and rng.random() < 0.3):
                    note(9, tt, 60, 36, rng.integers(90, 115))  # kick
                if k in (2, 6):
                    note(9, tt, 60, 38, rng.integers(80, 110))  # snare
    desc = dict(
        bpm=round(bpm, 1),
        scale=scale_name,
        root=root,
        bars=n_bars,
        chord_program=chord_prog,
        lead_program=lead_prog,
        bass_program=bass_prog,
        drums=drums,
    )
    return midi_bytes(ev, bpm, tpb), desc


# ---------------------------------------------------------------------------
# Source description
# ---------------------------------------------------------------------------

PACKAGES = {
    # name: tar members to extract (GNU tar wildcards; '*' also matches '/')
    "asterisk-core-sounds-en-g722": ["./usr/share/asterisk/sounds/*", "./usr/share/doc/*"],
    "asterisk-core-sounds-es-g722": ["./usr/share/asterisk/sounds/*", "./usr/share/doc/*"],
    "asterisk-core-sounds-fr-g722": ["./usr/share/asterisk/sounds/*", "./usr/share/doc/*"],
    "fillets-ng-data-cs": ["./usr/share/games/fillets-ng/sound/*", "./usr/share/doc/*"],
    "tuxpaint-stamps-default": ["*_desc_*.ogg", "./usr/share/doc/*"],
    "0ad-data": None,  # special: audio/ is inside a 3 GB zip
    "minetest-data": ["*/sounds/*.ogg", "./usr/share/doc/*"],
    "colobot-common-sounds": ["./usr/share/games/colobot/*", "./usr/share/doc/*"],
    "hydrogen-drumkits-effects": ["*belofilms_GuitarStrums*", "./usr/share/doc/*"],
    "fluid-soundfont-gm": ["./usr/share/sounds/sf2/FluidR3_GM.sf2", "./usr/share/doc/*"],
}
ZEROAD_AUDIO_DIRS = (
    "audio/ambient/",
    "audio/actor/",
    "audio/resource/",
    "audio/attack/",
    "audio/music/",
    "audio/voice/",  # speech of --sources extended; the base build does not read it
)

# Speakers.  en and es asterisk prompts are the same voice (Allison Smith):
# both are on the training side.  Held out for validation: the French
# asterisk voice (June Wallack) and two tuxpaint volunteers (Greek, Bulgarian).
TRAIN_SPEAKERS = [
    "asterisk_en_allison",
    "asterisk_es_allison",
    "fillets_cs_m",
    "fillets_cs_v",
    "fillets_cs_other",
    "tuxpaint_be",
    "tuxpaint_ru",
    "tuxpaint_ca",
    "tuxpaint_fr",
    "tuxpaint_da",
]
# Looked at and left out: tuxpaint es (every file clipped / limited to 0 dBFS),
# tuxpaint ro (band-limited to about 5 kHz).
EXCLUDED_SPEAKERS = {
    "tuxpaint_es": "every file clipped (peaks at 0 dBFS, active level -5 dBFS)",
    "tuxpaint_ro": "band-limited to about 5 kHz",
}
VAL_SPEAKERS = ["asterisk_fr_june", "tuxpaint_el", "tuxpaint_bg"]
SPEAKER_SOURCE = {  # output sub-directory of <out>/clean
    "asterisk_en_allison": "asterisk",
    "asterisk_es_allison": "asterisk",
    "fillets_cs_m": "fillets_cs",
    "fillets_cs_v": "fillets_cs",
    "fillets_cs_other": "fillets_cs",
}
SPEAKER_CREDIT = {
    "asterisk_en_allison": "Allison Smith (asterisk-core-sounds-en-g722)",
    "asterisk_es_allison": "Allison Smith (asterisk-core-sounds-es-g722)",
    "asterisk_fr_june": "June Wallack (asterisk-core-sounds-fr-g722)",
    "fillets_cs_m": "Czech voice actor, small fish (fillets-ng-data-cs)",
    "fillets_cs_v": "Czech voice actor, big fish (fillets-ng-data-cs)",
    "fillets_cs_other": "Czech voice actors, other characters (fillets-ng-data-cs)",
    "tuxpaint_be": "Kseniya Buraya (tuxpaint, Belarusian)",
    "tuxpaint_bg": "Krasimir Petkov (tuxpaint, Bulgarian)",
    "tuxpaint_ca": "Pere Pujal i Carabantes (tuxpaint, Catalan)",
    "tuxpaint_da": "Joe Dalton (tuxpaint, Danish)",
    "tuxpaint_el": "Kiriaki Serafeim (tuxpaint, Greek)",
    "tuxpaint_es": "Estefania Ortiz (tuxpaint, Spanish)",
    "tuxpaint_fr": "PaulK / Jacques Chion (tuxpaint, French)",
    "tuxpaint_ro": "Tabbytha (tuxpaint, Romanian)",
    "tuxpaint_ru": "Edwin Veber (tuxpaint, Russian)",
}
ASTERISK_SKIP = re.compile(
    r"(/silence/|(^|/)(ascending-2tone|descending-2tone|beep|beeperr|"
    r"tt-monkeys)\.g722$)"
)

# QC thresholds ("listening by numbers")
QC = dict(
    min_sr=16000,
    max_clip_frac=1e-4,
    min_active_s=0.3,
    max_dur_s=25.0,
    min_snr_db=30.0,
    min_hf_db=-38.0,
    min_bw_db=-42.0,
    min_level_db=-45.0,
)
PREFERRED_SNR_DB = 35.0  # utterances at least this clean are used first
# --train-qc relaxed: training speakers only (validation and test speech keep QC).  A floor 25 dB
# under the speech is still 5 dB under the added noise of the cleanest training mixture (20 dB
# SNR), and 0.1 % of samples at full scale is the mild limiting of a loud line, not distortion.
# With a budget large enough for all of it (--max-mib 200 --noise-share 0.2) it adds about an hour
# of speech (fillets-ng clipping rejects, tuxpaint fr/ru noisy rejects); small builds are limited by
# their budget, not by QC.
QC_TRAIN_RELAXED = {**QC, "min_snr_db": 25.0, "max_clip_frac": 1e-3}


def train_qc_thresholds(train_qc: str) -> dict:
    """The QC thresholds of the training speakers for ``--train-qc``."""
    return QC_TRAIN_RELAXED if train_qc == "relaxed" else QC


def speech_files(ext: Path) -> dict:
    """speaker -> sorted list of source paths (relative to the extract dir)."""
    out: dict[str, list[str]] = {}

    def add(spk, p):
        out.setdefault(spk, []).append(p.relative_to(ext).as_posix())

    for lang, spk in (
        ("en", "asterisk_en_allison"),
        ("es", "asterisk_es_allison"),
        ("fr", "asterisk_fr_june"),
    ):
        for p in (ext / f"asterisk-core-sounds-{lang}-g722").rglob("*.g722"):
            if not ASTERISK_SKIP.search(p.as_posix()):
                add(spk, p)
    for p in (ext / "fillets-ng-data-cs").rglob("*.ogg"):
        add(xs.fillets_speaker(p.stem, "cs"), p)
    for p in (ext / "tuxpaint-stamps-default").rglob("*_desc_*.ogg"):
        m = re.search(r"_desc_([a-z]{2})\.ogg$", p.name)
        if m and f"tuxpaint_{m.group(1)}" in TRAIN_SPEAKERS + VAL_SPEAKERS:
            add(f"tuxpaint_{m.group(1)}", p)
    return {k: sorted(v) for k, v in out.items()}


def speech_source_dir(spk: str) -> str:
    return {**SPEAKER_SOURCE, **xs.EXTENDED_SPEAKER_SOURCE}.get(spk, spk.split("_")[0])


# Noise sources: name -> (kind, file glob(s) relative to the extract dir)
#   kind "long": long recordings cut into segments; "fx": short effects that
#   are strung together with random gaps.
NOISE_TRAIN = {
    "0ad_weather": ("long", ["0ad-data/audio/ambient/weather/*.ogg"]),
    "0ad_dayscape": ("long", ["0ad-data/audio/ambient/dayscape/*.ogg"]),
    "0ad_building": ("long", ["0ad-data/audio/ambient/building/*.ogg"]),
    "0ad_effects": (
        "fx",
        [
            "0ad-data/audio/actor/**/*.ogg",
            "0ad-data/audio/resource/**/*.ogg",
            "0ad-data/audio/attack/impact/*.ogg",
            "0ad-data/audio/attack/weapon/*.ogg",
            "0ad-data/audio/attack/siege/*.ogg",
            "0ad-data/audio/attack/destruction/*.ogg",
        ],
    ),
    "colobot_music": ("long", ["colobot-common-sounds/usr/share/games/colobot/music/*.ogg"]),
    # the game's soundtrack: 61 recorded pieces, orchestral and folk instruments
    "0ad_music": ("long", ["0ad-data/audio/music/**/*.ogg"]),
    "colobot_sounds": ("fx", ["colobot-common-sounds/usr/share/games/colobot/sounds/*.wav"]),
    "hydrogen_guitar_strums": (
        "fx",
        ["hydrogen-drumkits-effects/**/belofilms_GuitarStrums/*.flac"],
    ),
    "fluidsynth_gm": ("long", ["@fluid_train"]),
}
NOISE_VAL = {
    "0ad_water": ("long", ["0ad-data/audio/ambient/water/*.ogg"]),
    "0ad_fire": ("fx", ["0ad-data/audio/attack/fire/*.ogg"]),
    # doors sounds are CC-BY-3.0 (everything else CC-BY-SA-3.0 or CC0): left out
    # so that every committed demo file has one GPL-3-compatible licence story
    "minetest": ("fx", ["minetest-data/**/sounds/*.ogg", "!/mods/doors/"]),
    "colobot_music": ("long", ["@colobot_val"]),
    "fluidsynth_gm": ("long", ["@fluid_val"]),
}
COLOBOT_VAL_TRACKS = ("music011.ogg", "music012.ogg", "Quite.ogg")
SYNTH_KINDS = ("white", "pink", "brown")
ALL_PACKAGES = {**PACKAGES, **xs.EXTENDED_PACKAGES, **xs.MORE_NOISE_PACKAGES}
MIN_VAL_UTTERANCES = 40  # QC-passed utterances a base held-out speaker must have
EXTRA_TEST_PAIRS = 12  # --sources extended: pairs per condition of test_set/synthetic_extra


class Sources:
    """What one ``--sources`` choice builds from. ``base`` is the corpus as before issue 26
    (byte-identical audio); ``extended`` adds the speakers and noise of extended_sources.py,
    and a second held-out test set (``test_set/synthetic_extra``, ``val_extra/``) of its new
    held-out speakers and noise types. The base test set and ``val/`` stay as in ``base``.
    ``extended_noise`` is ``extended`` plus the music and ambience folders of
    ``xs.MORE_NOISE_TRAIN``, each capped in clips and spent before the budget split."""

    def __init__(self, name: str):
        self.name = name
        ext = name in ("extended", "extended_noise")
        self.extended = ext
        more = name == "extended_noise"
        self.packages = {
            **PACKAGES,
            **(xs.EXTENDED_PACKAGES if ext else {}),
            **(xs.MORE_NOISE_PACKAGES if more else {}),
        }
        self.train_speakers = TRAIN_SPEAKERS + (xs.EXTENDED_TRAIN_SPEAKERS if ext else [])
        self.val_speakers = list(VAL_SPEAKERS)  # the base test set and val/
        self.extra_val_speakers = list(xs.EXTENDED_VAL_SPEAKERS) if ext else []
        self.noise_train = {**NOISE_TRAIN, **(xs.EXTENDED_NOISE_TRAIN if ext else {})}
        self.noise_val = dict(NOISE_VAL)
        self.extra_noise_val = dict(xs.EXTENDED_NOISE_VAL) if ext else {}
        self.credit = {**SPEAKER_CREDIT, **(xs.EXTENDED_SPEAKER_CREDIT if ext else {})}
        self.more_noise = dict(xs.MORE_NOISE_TRAIN) if more else {}

    def speech_files(self, ext: Path) -> dict:
        files = speech_files(ext)
        if self.extended:
            files.update(xs.extended_speech_files(ext))
        return files


# ---------------------------------------------------------------------------
# Environment, downloads and extraction
# ---------------------------------------------------------------------------


def need_tool(name: str, why: str):
    if shutil.which(name) is None:
        raise RecipeError(f"'{name}' not found on PATH ({why})")


def check_python_modules(names):
    import importlib

    for n in names:
        try:
            importlib.import_module(n)
        except Exception:
            raise RecipeError(f"python module '{n}' is missing (pip install {n})") from None
    import soundfile as sf

    if "OGG" not in sf.available_formats() or "FLAC" not in sf.available_formats():
        raise RecipeError("this soundfile/libsndfile build lacks OGG or FLAC support")


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_deb(debs: Path, pkg: str):
    c = sorted(debs.glob(f"{pkg}_*.deb"))
    return c[-1] if c else None


def ensure_deb(debs: Path, pkg: str) -> Path:
    deb = find_deb(debs, pkg)
    if deb is not None:
        return deb
    need_tool("apt-get", f"needed to download {pkg}; or put {pkg}_*.deb into {debs}")
    debs.mkdir(parents=True, exist_ok=True)
    log(f"apt-get download {pkg}")
    r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
    deb = find_deb(debs, pkg)
    if r.returncode != 0 or deb is None:
        err = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise RecipeError(f"apt-get download {pkg} failed: {err}")
    return deb


def deb_version(deb: Path) -> str:
    return deb.name.split("_")[1]


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def ensure_extracted(cache: Path, pkg: str) -> Path:
    deb = ensure_deb(cache / "debs", pkg)
    dst = cache / "extract" / pkg
    marker = dst / ".extracted"
    # the marker names the deb and what was kept, so a recipe that keeps more unpacks again
    members = ZEROAD_AUDIO_DIRS if pkg == "0ad-data" else ALL_PACKAGES[pkg]
    stamp = f"{deb.name} {' '.join(members)}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return dst
    need_tool("dpkg-deb", "needed to unpack .deb files")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    log(f"unpacking {deb.name}")
    if pkg == "0ad-data":
        _extract_0ad(deb, dst)
    else:
        cmd = (
            f"dpkg-deb --fsys-tarfile {sh_quote(deb)} | tar -x --wildcards -C {sh_quote(dst)} "
            + " ".join(sh_quote(m) for m in ALL_PACKAGES[pkg])
        )
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise RecipeError(f"unpacking {deb.name} failed: {r.stderr.strip()[-300:]}")
    marker.write_text(stamp + "\n")
    return dst


def sh_quote(p) -> str:
    return "'" + str(p).replace("'", "'\\''") + "'"


def _extract_0ad(deb: Path, dst: Path):
    """0ad-data ships one 3.2 GB zip; unpack it to a temporary file and keep
    only the sound effects and ambiences (about 110 MB)."""
    zip_member = "./usr/share/games/0ad/mods/public/public.zip"
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        cmd = (
            f"dpkg-deb --fsys-tarfile {sh_quote(deb)} | tar -x -C {sh_quote(tmp)} "
            f"{zip_member} ./usr/share/doc/0ad-data/copyright"
        )
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise RecipeError(f"unpacking {deb.name} failed: {r.stderr.strip()[-300:]}")
        (dst / "doc").mkdir()
        shutil.copy(Path(tmp) / "usr/share/doc/0ad-data/copyright", dst / "doc" / "copyright")
        with zipfile.ZipFile(Path(tmp) / zip_member) as z:
            for info in z.infolist():
                name = info.filename
                if name == "audio/LICENSE.txt" or (
                    name.startswith(ZEROAD_AUDIO_DIRS) and name.endswith(".ogg")
                ):
                    z.extract(info, dst)


# ---------------------------------------------------------------------------
# Audio I/O
# ---------------------------------------------------------------------------


def resample(x: np.ndarray, fs: int, sr: int = SR) -> np.ndarray:
    if fs == sr:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(fs, sr)
    return resample_poly(x, sr // g, fs // g)


def load_source(path: Path, start_s: float = 0.0, dur_s: float | None = None):
    """Decode to 16 kHz mono float64.  Returns (x16k, original_sr, clip_frac)."""
    path = Path(path)
    if path.suffix == ".g722":
        need_tool("ffmpeg", "needed to decode G.722 prompts")
        r = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-f",
                "g722",
                "-i",
                str(path),
                "-f",
                "f32le",
                "-ac",
                "1",
                "-ar",
                str(SR),
                "-",
            ],
            capture_output=True,
        )
        if r.returncode != 0:
            raise RecipeError(f"ffmpeg could not decode {path}: {r.stderr.decode()[-200:]}")
        x = np.frombuffer(r.stdout, dtype=np.float32).astype(np.float64)
        clip = float(np.mean(np.abs(x) >= 0.985)) if x.size else 0.0
        return x, SR, clip
    import soundfile as sf

    info = sf.info(str(path))
    start = int(start_s * info.samplerate)
    stop = None if dur_s is None else start + int(math.ceil(dur_s * info.samplerate))
    x, fs = sf.read(str(path), start=start, stop=stop, dtype="float64", always_2d=True)
    clip = float(np.mean(np.abs(x) >= 0.985)) if x.size else 0.0
    x = x.mean(axis=1)
    return resample(x, fs), fs, clip


def highpass(x: np.ndarray, fc: float = 60.0) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    if len(x) < 64:
        return x
    sos = butter(2, fc, btype="highpass", fs=SR, output="sos")
    return sosfiltfilt(sos, x)


def encode_flac(x: np.ndarray) -> bytes:
    import soundfile as sf

    b = io.BytesIO()
    sf.write(
        b, to_pcm16(x), SR, format="FLAC", subtype="PCM_16", compression_level=FLAC_COMPRESSION
    )
    return b.getvalue()


def _ogg_crc_table():
    t = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        t.append(r & 0xFFFFFFFF)
    return t


_OGG_CRC = _ogg_crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def ogg_set_serial(data: bytes, serial: int = 0x66736E74) -> bytes:
    """libsndfile picks a random Ogg stream serial number; rewrite it (and
    the page CRCs) so that encoding is byte-for-byte reproducible."""
    buf = bytearray(data)
    pos = 0
    while pos < len(buf):
        if buf[pos : pos + 4] != b"OggS":
            raise ValueError("not an Ogg page")
        nseg = buf[pos + 26]
        size = 27 + nseg + sum(buf[pos + 27 : pos + 27 + nseg])
        buf[pos + 14 : pos + 18] = struct.pack("<I", serial)
        buf[pos + 22 : pos + 26] = b"\0\0\0\0"
        buf[pos + 22 : pos + 26] = struct.pack("<I", ogg_crc(bytes(buf[pos : pos + size])))
        pos += size
    return bytes(buf)


def encode_vorbis(x: np.ndarray) -> bytes:
    import soundfile as sf

    b = io.BytesIO()
    sf.write(
        b,
        np.asarray(x, dtype=np.float32),
        SR,
        format="OGG",
        subtype="VORBIS",
        compression_level=VORBIS_COMPRESSION,
    )
    return ogg_set_serial(b.getvalue())


def decode_bytes(data: bytes) -> np.ndarray:
    import soundfile as sf

    x, fs = sf.read(io.BytesIO(data), dtype="float64")
    assert fs == SR
    return x


def write_wav16(path: Path, x: np.ndarray):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(x), SR, subtype="PCM_16")


# ---------------------------------------------------------------------------
# Speech: analysis (cached), QC and clip building
# ---------------------------------------------------------------------------


def process_utterance(path: Path):
    """Decode, 60 Hz high-pass, trim and compact pauses.  Returns (y, orig_sr,
    clip_frac, hp) where ``hp`` is the untrimmed high-passed signal."""
    x, fs, clip = load_source(path)
    x = x - np.mean(x) if x.size else x
    hp = highpass(x)
    return trim_and_compact(hp), fs, clip, hp


def analyze_utterance(path: str):
    try:
        y, fs, clip, hp = process_utterance(Path(path))
    except Exception as e:  # a broken file is a QC failure, not a crash
        return dict(error=str(e)[:200])
    lev = frame_levels_db(hp)
    if lev.size < 10 or y.size == 0:
        return dict(
            sr=fs,
            dur=len(hp) / SR,
            clip=clip,
            active=0.0,
            trimmed=len(y) / SR,
            level=-120.0,
            floor=-120.0,
            hf=-120.0,
            bw=-120.0,
        )
    thr = activity_threshold_db(lev)
    act = lev > thr
    level = float(10 * np.log10(np.mean(10 ** (lev[act] / 10)) + EPS))
    # noise floor: the quietest 60 ms stretch (pauses, lead-in, lead-out)
    floor = float(
        10 * np.log10(np.min(np.convolve(10 ** (lev / 10), np.ones(5) / 5, "valid")) + EPS)
    )
    n = len(hp) // 320
    frames = hp[: n * 320].reshape(n, 320)
    lv = 10 * np.log10(np.mean(frames**2, axis=1) + EPS)
    sel = frames[lv > thr] if np.any(lv > thr) else frames
    spec = np.mean(np.abs(np.fft.rfft(sel * np.hanning(320), axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(320, 1 / SR)
    hf = float(10 * np.log10(spec[f >= 5000].sum() / (spec.sum() + EPS) + EPS))
    # bandwidth: mean power density 6-7.8 kHz relative to 0.3-3 kHz
    bw = float(
        10
        * np.log10(
            (spec[(f >= 6000) & (f < 7800)].mean() + EPS)
            / (spec[(f >= 300) & (f < 3000)].mean() + EPS)
        )
    )
    return dict(
        sr=fs,
        dur=round(len(hp) / SR, 3),
        clip=clip,
        active=round(act.sum() * 0.01, 2),
        trimmed=round(len(y) / SR, 3),
        level=round(level, 2),
        floor=round(floor, 2),
        hf=round(hf, 2),
        bw=round(bw, 2),
    )


def qc_reason(m: dict, qc: dict = QC):
    """None if the utterance passes the thresholds ``qc``, else a short reason."""
    if "error" in m:
        return "decode_error"
    if m["sr"] < qc["min_sr"]:
        return "low_samplerate"
    if m["clip"] > qc["max_clip_frac"]:
        return "clipping"
    if m["active"] < qc["min_active_s"]:
        return "too_short"
    if m["dur"] > qc["max_dur_s"]:
        return "too_long"
    if m["level"] < qc["min_level_db"]:
        return "too_quiet"
    if m["level"] - m["floor"] < qc["min_snr_db"]:
        return "noisy"
    if m["hf"] < qc["min_hf_db"] or m["bw"] < qc["min_bw_db"]:
        return "band_limited"
    return None


def _analyze_job(args):
    ext, rel = args
    return rel, analyze_utterance(str(Path(ext) / rel))


def analyze_speech(cache: Path, ext: Path, files: dict, jobs: int) -> dict:
    """Metrics per source file, cached in <cache>/analysis_speech.json."""
    cpath = cache / "analysis_speech.json"
    db = {}
    if cpath.exists():
        try:
            d = json.loads(cpath.read_text())
            if d.get("version") == ANALYSIS_VERSION:
                db = d["files"]
        except Exception:
            db = {}
    todo = [rel for spk in files for rel in files[spk] if rel not in db]
    if todo:
        log(f"analysing {len(todo)} speech files on {jobs} processes")
        if jobs > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(jobs) as pool:
                for rel, m in pool.imap_unordered(
                    _analyze_job, [(str(ext), r) for r in todo], chunksize=16
                ):
                    db[rel] = m
        else:
            for r in todo:
                db[r] = _analyze_job((str(ext), r))[1]
        tmp = cpath.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": ANALYSIS_VERSION, "files": db}))
        tmp.replace(cpath)
    return db


def qc_speakers(files: dict, db: dict, seed: int, train_qc: str = "strict", train_speakers=None):
    """Returns (passed: speaker -> shuffled list, report).  ``train_qc="relaxed"`` applies
    QC_TRAIN_RELAXED to the training speakers (``train_speakers``, default TRAIN_SPEAKERS)."""
    train_speakers = TRAIN_SPEAKERS if train_speakers is None else train_speakers
    passed, report = {}, {}
    for spk, rels in files.items():
        qc = train_qc_thresholds(train_qc) if spk in train_speakers else QC
        reasons: dict[str, int] = {}
        ok = []
        for r in rels:
            why = qc_reason(db[r], qc)
            if why is None:
                ok.append(r)
            else:
                reasons[why] = reasons.get(why, 0) + 1
        order = rng_for(seed, "speech-order", spk).permutation(len(ok))
        ok = [ok[i] for i in order]
        # cleaner recordings first (stable, so the random order is kept within each tier)
        ok.sort(key=lambda r: db[r]["level"] - db[r]["floor"] < PREFERRED_SNR_DB)
        passed[spk] = ok
        report[spk] = dict(
            files=len(rels),
            passed=len(ok),
            rejected=reasons,
            passed_hours=round(sum(db[r]["trimmed"] for r in ok) / 3600, 3),
        )
    return passed, report


def speech_clip_stream(ext: Path, rels, min_s: float, max_s: float):
    """Yields (clip, [source rels]) built from consecutive utterances of one
    speaker, each normalised to the storage level."""
    buf, srcs, n = [], [], 0
    min_n, max_n = int(min_s * SR), int(max_s * SR)
    for r in rels:
        y, _, _, _ = process_utterance(ext / r)
        if len(y) < SR // 4:
            continue
        y, _ = normalize_active_level(y, CLEAN_STORE_LEVEL_DB)
        y = fade_edges(y[:max_n], int(0.01 * SR))
        if buf and n + len(y) > max_n:
            if n >= min_n // 2:
                yield _finish_clip(buf), srcs
            buf, srcs, n = [], [], 0
        buf.append(y)
        srcs.append(r)
        n += len(y)
        if n >= min_n:
            yield _finish_clip(buf), srcs
            buf, srcs, n = [], [], 0


def _finish_clip(buf):
    y = np.concatenate(buf)
    peak = float(np.max(np.abs(y)))
    if peak > CLEAN_PEAK_LIMIT:
        y = y * (CLEAN_PEAK_LIMIT / peak)
    return y


def fixed_length_speech(ext: Path, rels, lengths):
    """For fixed test/demo sets: one clip per requested length (seconds) by
    concatenating utterances and cutting at the length with a short fade."""
    it = iter(rels)
    for L in lengths:
        n = int(round(L * SR))
        buf, srcs, total = [], [], 0
        while total < n:
            r = next(it)  # StopIteration means the pool is too small
            y, _, _, _ = process_utterance(ext / r)
            if len(y) < SR // 4:
                continue
            y, _ = normalize_active_level(y, CLEAN_STORE_LEVEL_DB)
            buf.append(fade_edges(y, int(0.01 * SR)))
            srcs.append(r)
            total += len(buf[-1])
        y = np.concatenate(buf)[:n]
        k = int(0.05 * SR)
        y[-k:] *= np.linspace(1.0, 0.0, k)
        yield _finish_clip([y]), srcs


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


def render_fluidsynth(
    cache: Path, ext: Path, split: str, count: int, seed: int, seconds: float = 30.0
):
    """Render ``count`` generated pieces with FluidR3_GM; cached WAVs."""
    need_tool("fluidsynth", "needed to render music noise")
    sf2 = ext / "fluid-soundfont-gm/usr/share/sounds/sf2/FluidR3_GM.sf2"
    if not sf2.exists():
        raise RecipeError(f"soundfont missing: {sf2}")
    programs = GM_TRAIN_PROGRAMS if split == "train" else GM_VAL_PROGRAMS
    d = cache / "fluidsynth" / split
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        s = stable_seed(seed, "midi", split, i)
        wav = d / f"{split}_{i:03d}_{s % 10**8:08d}.wav"
        meta = wav.with_suffix(".json")
        if not wav.exists() or not meta.exists():
            smf, desc = compose_midi(s, programs, seconds)
            mid = wav.with_suffix(".mid")
            mid.write_bytes(smf)
            tmp = wav.with_suffix(".tmp.wav")
            r = subprocess.run(
                [
                    "fluidsynth",
                    "-ni",
                    "-q",
                    "-g",
                    "0.4",
                    "-r",
                    "32000",
                    "-T",
                    "wav",
                    "-O",
                    "s16",
                    "-F",
                    str(tmp),
                    str(sf2),
                    str(mid),
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0 or not tmp.exists():
                raise RecipeError(f"fluidsynth failed: {(r.stderr or r.stdout).strip()[-200:]}")
            tmp.replace(wav)
            meta.write_text(json.dumps(desc))
        out.append(wav)
    return out


def resolve_noise_files(ext: Path, spec, fluid: dict) -> list:
    files = []
    excludes = [p[1:] for p in spec if p.startswith("!")]
    for pat in spec:
        if pat.startswith("!"):
            continue
        if pat == "@fluid_train":
            files += fluid["train"]
        elif pat == "@fluid_val":
            files += fluid["val"]
        elif (more := xs.extra_noise_files(ext, pat)) is not None:
            files += more
        elif pat == "@colobot_val":
            d = ext / "colobot-common-sounds/usr/share/games/colobot/music"
            files += [d / n for n in COLOBOT_VAL_TRACKS]
        else:
            files += sorted(ext.glob(pat))
    if spec == NOISE_TRAIN["colobot_music"][1]:
        files = [f for f in files if f.name not in COLOBOT_VAL_TRACKS]
    files = [f for f in files if not any(e in f.as_posix() for e in excludes)]
    return sorted(set(files))


def _silence_ratio(x) -> float:
    lev = frame_levels_db(x)
    return float(np.mean(lev < -80)) if lev.size else 1.0


def long_segment_stream(files, rng, seg_s):
    """Round-robin over files (shuffled), random non-overlapping segment
    positions.  ``seg_s`` is a float or a callable returning one."""
    import soundfile as sf

    files = [files[i] for i in rng.permutation(len(files))]
    durs = {f: sf.info(str(f)).duration for f in files}
    used = {f: [] for f in files}
    misses = {f: 0 for f in files}
    while True:
        alive = [f for f in files if misses[f] <= 20]
        if not alive:
            return
        for f in alive:
            L = seg_s() if callable(seg_s) else seg_s
            if durs[f] < L + 0.1:
                misses[f] = 99
                continue
            for _ in range(20):
                st = float(rng.uniform(0, durs[f] - L))
                if all(abs(st - u) >= L for u in used[f]):
                    break
            else:
                misses[f] = 99
                continue
            used[f].append(st)
            x, _, _ = load_source(f, st, L)
            x = x[: int(round(L * SR))]
            if len(x) < int(round(L * SR)) or rms_db(x) < -75 or _silence_ratio(x) > 0.7:
                misses[f] += 1
                continue
            yield x, f"{f.name}@{st:.1f}s"


def fx_clip_stream(files, rng, seg_s):
    """Strings short effects together (random gaps and gains); each source
    file is used once."""
    files = [files[i] for i in rng.permutation(len(files))]
    it = iter(files)
    exhausted = False
    while not exhausted:
        L = seg_s() if callable(seg_s) else seg_s
        n = int(round(L * SR))
        out = np.zeros(n)
        pos = int(rng.uniform(0, 0.3) * SR)
        names = []
        while pos < n:
            try:
                f = next(it)
            except StopIteration:
                exhausted = True
                break
            x, _, _ = load_source(f)
            if x.size < 160:
                continue
            lev = frame_levels_db(x)
            if lev.size == 0:
                continue
            act = np.flatnonzero(lev > lev.max() - 50)
            x = x[act[0] * 160 : act[-1] * 160 + 320]
            x = fade_edges(x, 80)
            x = normalize_rms(x, NOISE_STORE_LEVEL_DB + float(rng.uniform(-8, 2)), 0.9)
            k = min(len(x), n - pos)
            out[pos : pos + k] += x[:k]
            names.append(f.name)
            pos += k + int(rng.uniform(0.0, 0.6) * SR)
        if names and rms_db(out) > -60 and (not exhausted or pos >= n * 0.6):
            yield out, "+".join(names)


def noise_stream(kind, files, rng, seg_s):
    return (long_segment_stream if kind == "long" else fx_clip_stream)(files, rng, seg_s)


def finish_noise(x):
    return normalize_rms(x - np.mean(x), NOISE_STORE_LEVEL_DB, NOISE_PEAK_LIMIT)


# ---------------------------------------------------------------------------
# Room impulse responses
# ---------------------------------------------------------------------------


def simulate_rir(rng: np.random.Generator, rt60_range=(0.2, 1.0), max_order_cap: int = 50):
    """Random shoebox room (image source method).  Accepts a draw only if the
    measured RT60 is inside ``rt60_range``.  Returns (rir, meta)."""
    import pyroomacoustics as pra

    for _ in range(200):
        dim = np.array([rng.uniform(3.0, 10.0), rng.uniform(2.5, 8.0), rng.uniform(2.4, 4.0)])
        rt60 = float(rng.uniform(*rt60_range))
        try:
            e_abs, max_order = pra.inverse_sabine(rt60, dim)
        except ValueError:
            continue
        mic = np.array(
            [rng.uniform(0.5, dim[0] - 0.5), rng.uniform(0.5, dim[1] - 0.5), rng.uniform(1.0, 1.8)]
        )
        for _ in range(50):
            src = np.array(
                [
                    rng.uniform(0.5, dim[0] - 0.5),
                    rng.uniform(0.5, dim[1] - 0.5),
                    rng.uniform(1.2, 2.0),
                ]
            )
            dist = float(np.linalg.norm(src - mic))
            if 0.5 <= dist <= 3.5:
                break
        else:
            continue
        room = pra.ShoeBox(
            dim,
            fs=SR,
            materials=pra.Material(float(e_abs)),
            max_order=int(min(max_order, max_order_cap)),
            air_absorption=True,
        )
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        try:
            measured = float(pra.experimental.measure_rt60(h, SR))
        except Exception:
            continue
        if not (rt60_range[0] <= measured <= rt60_range[1]):
            continue
        peak = int(np.argmax(np.abs(h)))
        h = h[max(0, peak - 20) :]
        edc = np.cumsum((h**2)[::-1])[::-1]
        edc_db = 10 * np.log10(edc / edc[0] + EPS)
        below = np.flatnonzero(edc_db < -60)
        if below.size:
            h = h[: below[0]]
        k = min(len(h) // 4, int(0.01 * SR))
        if k > 0:
            h[-k:] *= np.linspace(1, 0, k)
        h = h / np.max(np.abs(h)) * 0.99
        meta = dict(
            room=[round(float(v), 2) for v in dim],
            rt60_target=round(rt60, 3),
            rt60_measured=round(measured, 3),
            src_mic_dist=round(dist, 2),
            absorption=round(float(e_abs), 4),
            max_order=int(min(max_order, max_order_cap)),
            length_s=round(len(h) / SR, 3),
        )
        return h, meta
    raise RecipeError("could not simulate a room within the RT60 range")


def rir_set(cache: Path, seed: int, tag: str, count: int):
    """``count`` RIRs for ``tag`` (train/val/demo), cached as npz."""
    p = cache / "rir" / f"{tag}_{count}_{stable_seed(seed, 'rir', tag) % 10**10}.npz"
    if p.exists():
        z = np.load(p, allow_pickle=False)
        metas = json.loads(str(z["meta"]))
        return [z[f"h{i}"] for i in range(count)], metas
    log(f"simulating {count} {tag} RIRs")
    rng = rng_for(seed, "rir", tag)
    hs, metas = [], []
    for _ in range(count):
        h, m = simulate_rir(rng)
        hs.append(h)
        metas.append(m)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp.npz")
    np.savez(tmp, meta=json.dumps(metas), **{f"h{i}": h for i, h in enumerate(hs)})
    tmp.replace(p)
    return hs, metas


def reverberate(x, h):
    from scipy.signal import fftconvolve

    return fftconvolve(x, h)[: len(x)]


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------


class Ctx:
    def __init__(self, cache: Path, ext: Path, seed: int, jobs: int):
        self.cache, self.ext, self.seed, self.jobs = cache, ext, seed, jobs


def prepare_sources(ctx: Ctx, pkgs):
    for p in pkgs:
        ensure_extracted(ctx.cache, p)


def tree_bytes(root: Path) -> int:
    """Apparent size like ``du -sb``: files plus directory entries."""
    total = root.lstat().st_size
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            total += (Path(dp) / n).lstat().st_size
    return total


class Writer:
    """Writes files below ``root`` and keeps byte counts per group."""

    def __init__(self, root: Path):
        self.root = root
        self.groups: dict[str, dict] = {}

    def put(self, rel: str, data: bytes, group: str, seconds: float, **info):
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        g = self.groups.setdefault(group, dict(files=0, bytes=0, seconds=0.0, items={}))
        g["files"] += 1
        g["bytes"] += len(data)
        g["seconds"] += seconds
        if info:
            g["items"][rel] = info

    def put_wav(self, rel: str, x, group: str, **info):
        b = io.BytesIO()
        import soundfile as sf

        sf.write(b, to_pcm16(x), SR, format="WAV", subtype="PCM_16")
        self.put(rel, b.getvalue(), group, len(x) / SR, **info)

    def bytes(self, prefix: str = "") -> int:
        return sum(g["bytes"] for k, g in self.groups.items() if k.startswith(prefix))


def val_speech_pools(passed: dict, speakers=None):
    """Disjoint utterance pools per held-out speaker (default VAL_SPEAKERS): 'test' (fixed test
    set, stored in val/clean) and 'demo' (committed demo set, unit-test assets)."""
    pools = {"test": {}, "demo": {}}
    for spk in VAL_SPEAKERS if speakers is None else speakers:
        rels = passed[spk]
        k = int(len(rels) * 0.6)
        pools["test"][spk] = rels[:k]
        pools["demo"][spk] = rels[k:]
    return pools


def round_robin(
    streams: dict,
    budget: int,
    encode,
    writer: Writer,
    name_fn,
    group_fn,
    max_items: dict | None = None,
):
    """Take one item per stream in turn while it fits ``budget`` bytes."""
    active = list(streams)
    used = 0
    counts = {k: 0 for k in streams}
    while active:
        for k in list(active):
            if max_items and counts[k] >= max_items.get(k, 1 << 30):
                active.remove(k)
                continue
            try:
                x, src = next(streams[k])
            except StopIteration:
                active.remove(k)
                continue
            data = encode(x)
            if used + len(data) > budget:
                active.remove(k)
                continue
            counts[k] += 1
            writer.put(name_fn(k, counts[k]), data, group_fn(k), len(x) / SR, src=src)
            used += len(data)
    return used, counts


def build_fixed_pairs(
    ctx, writer_or_dir, speech_rels, noise_streams, rirs, lengths, snrs, levels, reverb_flags, rng
):
    """Create mixtures; returns list of dicts (clean, noise, noisy arrays + meta)."""
    out = []
    spk_iters = {s: iter(r) for s, r in speech_rels.items()}
    spk_names = list(speech_rels)
    noise_names = list(noise_streams)
    ri = 0
    for i, L in enumerate(lengths):
        spk = spk_names[i % len(spk_names)]
        clip, srcs = next(fixed_length_speech(ctx.ext, spk_iters[spk], [L]))
        nname = noise_names[i % len(noise_names)]
        noise, nsrc = next(noise_streams[nname])
        # mix exactly what is stored: 16-bit speech, Vorbis-decoded noise
        clip = to_pcm16(clip) / 32768.0
        noise_ogg = encode_vorbis(finish_noise(fit_length(noise, len(clip), rng)))
        noise = fit_length(decode_bytes(noise_ogg), len(clip), rng)
        target = clip
        rmeta = None
        if reverb_flags[i]:
            h, rmeta = rirs[ri % len(rirs)]
            ri += 1
            target = reverberate(clip, h)
        noisy, clean_s, noise_s, lvl = mix_at_snr(target, noise, snrs[i], levels[i])
        out.append(
            dict(
                dry=clip,
                noise_ogg=noise_ogg,
                clean=clean_s,
                noisy=noisy,
                snr=int(snrs[i]),
                level_db=round(lvl, 2),
                speaker=spk,
                speech_src=srcs,
                noise_source=nname,
                noise_src=nsrc,
                rir=rmeta,
                reverb=bool(reverb_flags[i]),
            )
        )
    return out


def build_test_set(ctx, w, speech_pools, noise_specs, fluid, rirs, n_test, tag, name, val_dir):
    """Fixed pairs of held-out speech and noise, ``n_test`` per condition, written to
    ``test_set/<name>/{no_reverb,with_reverb}`` and their sources to ``<val_dir>/``. ``tag``
    names the random streams ("" for the base test set, so that it stays as it was)."""
    seed = ctx.seed
    vhs, vmetas = rirs
    val_noise = {}
    for k, (kind, spec) in noise_specs.items():
        fl = resolve_noise_files(ctx.ext, spec, fluid)
        if tag:  # the new held-out noise is short effects: once used up, string them anew
            val_noise[k] = _cycled(
                lambda i, kind=kind, fl=fl, k=k: noise_stream(
                    kind, fl, rng_for(seed, f"val{tag}-noise", k, i), 6.0
                )
            )
        else:
            val_noise[k] = noise_stream(kind, fl, rng_for(seed, "val-noise", k), 6.0)
    test_meta = {}
    for cond, rev in (("no_reverb", False), ("with_reverb", True)):
        r = rng_for(seed, f"test{tag}", cond)
        lengths = [float(v) for v in r.uniform(4.0, 4.6, n_test)]
        snrs = [int(v) for v in np.round(stratified_uniform(r, -5, 20, n_test))]
        levels = [float(v) for v in r.uniform(-35, -15, n_test)]
        pairs = build_fixed_pairs(
            ctx,
            None,
            speech_pools,
            val_noise,
            list(zip(vhs, vmetas, strict=True)),
            lengths,
            snrs,
            levels,
            [rev] * n_test,
            r,
        )
        base = f"test_set/{name}/{cond}"
        items = []
        for i, p in enumerate(pairs):
            stem = f"{cond}_{i:03d}"
            w.put(
                f"{val_dir}/clean/{stem}_{p['speaker']}.flac",
                encode_flac(p["dry"]),
                "val_clean",
                len(p["dry"]) / SR,
                speaker=p["speaker"],
                src=p["speech_src"],
            )
            w.put(
                f"{val_dir}/noise/{stem}_{p['noise_source']}.ogg",
                p["noise_ogg"],
                "val_noise",
                len(p["dry"]) / SR,
                source=p["noise_source"],
                src=p["noise_src"],
            )
            w.put_wav(f"{base}/clean/{clean_name(i)}", p["clean"], "test_set")
            w.put_wav(f"{base}/noisy/{noisy_name(p['snr'], i)}", p["noisy"], "test_set")
            items.append(
                dict(
                    fileid=i,
                    snr=p["snr"],
                    level_db=p["level_db"],
                    speaker=p["speaker"],
                    noise=p["noise_source"],
                    rir=(f"val_{i:04d}" if rev else None),
                    dur=round(len(p["clean"]) / SR, 3),
                )
            )
        test_meta[cond] = items
    return test_meta


def build_corpus(args):
    t_start = time.time()
    cache = Path(args.cache).expanduser()
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    max_bytes = int(args.max_mib * 1024 * 1024)
    check_requirements()
    config = dict(
        recipe=RECIPE_NAME,
        version=RECIPE_VERSION,
        seed=args.seed,
        max_mib=args.max_mib,
        noise_share=args.noise_share,
        test_pairs=args.test_pairs,
        train_rirs=args.train_rirs,
        train_qc=args.train_qc,
        script_sha256=sha256_file(Path(__file__)),
    )
    src = Sources(args.sources)
    if args.sources != "base":  # the base build's config (and manifest) stay as they were
        config["sources"] = args.sources
        config["extended_sources_sha256"] = sha256_file(Path(xs.__file__))
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    man_path = out / "manifest.json"
    if out.exists() and man_path.exists() and not args.force:
        try:
            old = json.loads(man_path.read_text())
            if (
                old.get("config_hash") == config_hash
                and tree_bytes(out) == old["totals"]["du_sb_bytes"]
            ):
                log(f"{out} is up to date (config {config_hash}); use --force to rebuild")
                return 0
        except Exception:
            pass
    if out.exists() and any(out.iterdir()) and not man_path.exists():
        raise RecipeError(
            f"{out} exists, is not empty and has no manifest.json; refusing to overwrite"
        )

    ctx = Ctx(cache=cache, ext=cache / "extract", seed=args.seed, jobs=args.jobs)
    cache.mkdir(parents=True, exist_ok=True)
    prepare_sources(ctx, src.packages)
    debs = {p: find_deb(cache / "debs", p) for p in src.packages}

    tmp = out.parent / (out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    w = Writer(tmp)

    # --- speech analysis and QC -------------------------------------------
    files = src.speech_files(ctx.ext)
    missing = [
        s for s in src.train_speakers + src.val_speakers + src.extra_val_speakers if s not in files
    ]
    if missing:
        raise RecipeError(f"no speech files found for {missing}; is the cache complete?")
    db = analyze_speech(cache, ctx.ext, files, args.jobs)
    passed, qc_report = qc_speakers(files, db, args.seed, args.train_qc, src.train_speakers)
    for spk in src.val_speakers + src.extra_val_speakers:
        need = MIN_VAL_UTTERANCES if spk in VAL_SPEAKERS else xs.EXTENDED_MIN_VAL_UTTERANCES
        if len(passed[spk]) < need:
            raise RecipeError(f"too few QC-passed utterances for held-out speaker {spk}")

    # --- fluidsynth music -------------------------------------------------
    log("rendering MIDI music with fluidsynth")
    fluid = {
        "train": render_fluidsynth(cache, ctx.ext, "train", args.fluid_train, args.seed),
        "val": render_fluidsynth(cache, ctx.ext, "val", args.fluid_val, args.seed),
    }

    # --- RIRs -------------------------------------------------------------
    hs, metas = rir_set(cache, args.seed, "train", args.train_rirs)
    rir_items = {}
    for i, (h, m) in enumerate(zip(hs, metas, strict=True)):
        w.put(f"rir/sim_{i:04d}.flac", encode_flac(h), "rir", len(h) / SR, **m)
        rir_items[f"sim_{i:04d}"] = m
    n_test = args.test_pairs
    vhs, vmetas = rir_set(cache, args.seed, "val", n_test)
    for i, (h, m) in enumerate(zip(vhs, vmetas, strict=True)):
        w.put(f"val/rir/val_{i:04d}.flac", encode_flac(h), "val_rir", len(h) / SR, **m)

    # --- validation material and the fixed test set(s) ---------------------
    log("building the held-out test set")
    pools = val_speech_pools(passed, src.val_speakers)
    test_meta = build_test_set(
        ctx, w, pools["test"], src.noise_val, fluid, (vhs, vmetas), n_test, "", "synthetic", "val"
    )
    extra_meta = None
    if src.extra_val_speakers:
        log("building the second held-out test set (new speakers and noise types)")
        xhs, xmetas = rir_set(cache, args.seed, "val_extra", EXTRA_TEST_PAIRS)
        for i, (h, m) in enumerate(zip(xhs, xmetas, strict=True)):
            w.put(f"val_extra/rir/val_{i:04d}.flac", encode_flac(h), "val_rir", len(h) / SR, **m)
        xpools = val_speech_pools(passed, src.extra_val_speakers)
        extra_meta = build_test_set(
            ctx,
            w,
            xpools["test"],
            src.extra_noise_val,
            fluid,
            (xhs, xmetas),
            EXTRA_TEST_PAIRS,
            "-extra",
            "synthetic_extra",
            "val_extra",
        )

    # --- the added music and ambience: capped folders, spent before the budget split ---
    if src.more_noise:
        log("selecting the added music and ambience noise")
        write_noise_folders(ctx, w, src.more_noise, fluid, xs.MORE_NOISE_MAX_CLIPS)

    # --- budget for the training material -----------------------------------
    reserve = 512 * 1024  # manifest, directory entries
    fixed = w.bytes()
    remaining = max_bytes - fixed - reserve
    if remaining <= 0:
        raise RecipeError(
            f"--max-mib {args.max_mib} is too small for the fixed parts ({fixed / 2**20:.1f} MiB)"
        )
    noise_budget = int(remaining * args.noise_share)
    log(
        f"fixed parts {fixed / 2**20:.2f} MiB; training budget {remaining / 2**20:.2f} MiB "
        f"(noise {noise_budget / 2**20:.2f} MiB)"
    )

    # --- training noise -----------------------------------------------------
    log("selecting training noise")
    streams = training_noise_streams(ctx, src.noise_train, fluid)
    srng = rng_for(args.seed, "synthetic")
    streams["synthetic_stationary"] = iter(
        [
            (finish_noise(synth_stationary(SYNTH_KINDS[i % 3], 10 * SR, srng)), SYNTH_KINDS[i % 3])
            for i in range(6)
        ]
    )
    used_noise, _ = round_robin(
        streams,
        noise_budget,
        encode_vorbis,
        w,
        lambda k, i: (
            f"noise/synthetic_stationary/{SYNTH_KINDS[(i - 1) % 3]}_{i:03d}.ogg"
            if k == "synthetic_stationary"
            else f"noise/{k}/{k}_{i:04d}.ogg"
        ),
        lambda k: f"noise/{k}",
    )

    # --- training speech (gets everything that is left) ----------------------
    log("selecting training speech")
    speech_budget = max_bytes - reserve - w.bytes()
    sstreams = {
        s: speech_clip_stream(ctx.ext, passed[s], 4.0, 14.0)
        for s in src.train_speakers
        if passed.get(s)
    }
    round_robin(
        sstreams,
        speech_budget,
        encode_flac,
        w,
        lambda s, i: f"clean/{speech_source_dir(s)}/{s}_{i:04d}.flac",
        lambda s: f"clean/{s}",
    )

    # --- manifest ------------------------------------------------------------
    def summary(prefix):
        res = {}
        for k, g in sorted(w.groups.items()):
            if k.startswith(prefix):
                res[k[len(prefix) :] or k] = dict(
                    files=g["files"], bytes=g["bytes"], hours=round(g["seconds"] / 3600, 4)
                )
        return res

    clean_sum = summary("clean/")
    noise_sum = summary("noise/")
    per_source = {}
    for spk, v in clean_sum.items():
        s = per_source.setdefault(speech_source_dir(spk), dict(files=0, bytes=0, hours=0.0))
        for key in s:
            s[key] = round(s[key] + v[key], 4)
    manifest = dict(
        recipe=RECIPE_NAME,
        version=RECIPE_VERSION,
        config=config,
        config_hash=config_hash,
        created_by="recipes/debian_audio/prepare.py",
        sample_rate=SR,
        packages={
            p: dict(deb=debs[p].name, version=deb_version(debs[p]), sha256=sha256_file(debs[p]))
            for p in src.packages
        },
        encoding=dict(
            clean=f"FLAC 16-bit mono 16 kHz; each utterance normalised to an active-speech "
            f"level of {CLEAN_STORE_LEVEL_DB:g} dBFS (peak <= -1 dBFS), 60 Hz high-pass, "
            f"silence trimmed, pauses > 0.3 s shortened",
            noise=f"OGG/Vorbis mono 16 kHz (soundfile compression_level={VORBIS_COMPRESSION}), "
            f"10 s clips at {NOISE_STORE_LEVEL_DB:g} dBFS RMS",
            rir="FLAC 16-bit, peak 0.99, direct path at sample ~20, cut where the decay reaches -60 dB",
            test_set="WAV PCM 16-bit mono 16 kHz",
        ),
        split=dict(
            train_speakers={s: src.credit[s] for s in src.train_speakers},
            val_speakers={s: src.credit[s] for s in src.val_speakers},
            excluded_speakers=EXCLUDED_SPEAKERS,
            train_noise=sorted(
                list(src.noise_train) + list(src.more_noise) + ["synthetic_stationary"]
            ),
            val_noise=sorted(src.noise_val),
            val_noise_note=f"colobot val tracks: {', '.join(COLOBOT_VAL_TRACKS)}; "
            "fluidsynth val pieces use held-out GM instrument families "
            "(organ, brass, synth pad, ethnic)",
            rir="train RIRs in rir/, held-out RIRs (different seed) in val/rir/",
        ),
        clean=dict(
            per_speaker=clean_sum,
            per_source=per_source,
            hours=round(sum(v["hours"] for v in clean_sum.values()), 4),
            bytes=sum(v["bytes"] for v in clean_sum.values()),
        ),
        noise=dict(
            per_source=noise_sum,
            hours=round(sum(v["hours"] for v in noise_sum.values()), 4),
            bytes=sum(v["bytes"] for v in noise_sum.values()),
        ),
        rir=dict(files=w.groups["rir"]["files"], bytes=w.groups["rir"]["bytes"], items=rir_items),
        val=dict(clean=summary("val_clean"), noise=summary("val_noise"), rir=summary("val_rir")),
        test_set=dict(
            conditions=test_meta,
            bytes=w.bytes("test_set"),
            snr_range_db=[-5, 20],
            level_range_dbfs=[-35, -15],
            note="with_reverb: clean = reverberant clean (DNS convention); no_reverb: dry clean",
        ),
        **(
            {}
            if extra_meta is None
            else dict(
                test_set_extra=dict(
                    conditions=extra_meta,
                    speakers={s: src.credit[s] for s in src.extra_val_speakers},
                    noise=sorted(src.extra_noise_val),
                    note="test_set/synthetic_extra and val_extra/: held-out speakers and noise "
                    "types of --sources extended; snr and level ranges as test_set",
                )
            )
        ),
        qc=dict(
            thresholds=QC,
            train_thresholds=train_qc_thresholds(args.train_qc),
            speakers=qc_report,
        ),
        provenance={
            k: {rel: it for rel, it in g["items"].items()}
            for k, g in w.groups.items()
            if k.startswith(("clean/", "noise/"))
        },
    )
    manifest["totals"] = dict(du_sb_bytes=0, max_bytes=max_bytes)
    # The manifest contains its own size; iterate until stable.
    for _ in range(5):
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        total = tree_bytes(tmp)
        if manifest["totals"]["du_sb_bytes"] == total:
            break
        manifest["totals"]["du_sb_bytes"] = total
        manifest["totals"]["mib"] = round(total / 2**20, 3)
    if total > max_bytes:
        raise RecipeError(f"output is {total / 2**20:.2f} MiB > --max-mib {args.max_mib}")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    log(
        f"done in {time.time() - t_start:.0f} s: {out} = {total / 2**20:.2f} MiB; "
        f"clean {manifest['clean']['hours']:.3f} h, noise {manifest['noise']['hours']:.3f} h"
    )
    for spk, v in clean_sum.items():
        log(
            f"  clean/{spk}: {v['files']} files, {v['hours'] * 60:.1f} min, {v['bytes'] / 2**20:.2f} MiB"
        )
    for k, v in noise_sum.items():
        log(
            f"  noise/{k}: {v['files']} files, {v['hours'] * 60:.1f} min, {v['bytes'] / 2**20:.2f} MiB"
        )
    return 0


def training_noise_streams(ctx, specs: dict, fluid: dict) -> dict:
    """One stream of finished 10 s training clips per noise folder of ``specs``."""
    streams = {}
    for k, (kind, spec) in specs.items():
        fl = resolve_noise_files(ctx.ext, spec, fluid)
        if not fl:
            raise RecipeError(f"no files for noise source {k}")
        streams[k] = _map_stream(
            noise_stream(kind, fl, rng_for(ctx.seed, "noise", k), 10.0), finish_noise
        )
    return streams


def write_noise_folders(ctx, w, specs: dict, fluid: dict, max_clips: dict):
    """Training noise folders of at most ``max_clips[k]`` clips each, outside the noise budget
    (``noise/<k>/<k>_NNNN.ogg``, as the budgeted folders)."""
    streams = training_noise_streams(ctx, specs, fluid)
    round_robin(
        streams,
        1 << 62,
        encode_vorbis,
        w,
        lambda k, i: f"noise/{k}/{k}_{i:04d}.ogg",
        lambda k: f"noise/{k}",
        max_items=max_clips,
    )


def _cycled(make_stream):
    """Items of make_stream(0), then of make_stream(1), ...; ends at the first empty stream."""
    for i in itertools.count():
        n = 0
        for item in make_stream(i):
            n += 1
            yield item
        if n == 0:
            return


def _map_stream(stream, fn):
    for x, src in stream:
        yield fn(x), src


# ---------------------------------------------------------------------------
# Committed demo set and unit-test assets
# ---------------------------------------------------------------------------

DEMO_DIR = REPO_ROOT / "assets" / "demo_testset"
TEST_ASSETS_DIR = REPO_ROOT / "tests" / "assets"
DEMO_PAIRS = 36


def check_requirements():
    """Stop with one line if a tool or Python module the recipe runs is missing."""
    for tool, why in (
        ("ffmpeg", "decodes G.722"),
        ("fluidsynth", "renders music noise"),
        ("dpkg-deb", "unpacks .deb files"),
    ):
        need_tool(tool, why)
    # fsnet (pip install -e . from the repository root) mixes the fixed test pairs
    check_python_modules(["soundfile", "scipy", "pyroomacoustics", "fsnet"])


def build_demo(args):
    cache = Path(args.cache).expanduser()
    check_requirements()
    ctx = Ctx(cache=cache, ext=cache / "extract", seed=args.seed, jobs=args.jobs)
    needed = [
        "asterisk-core-sounds-fr-g722",
        "tuxpaint-stamps-default",
        "0ad-data",
        "minetest-data",
        "colobot-common-sounds",
        "fluid-soundfont-gm",
    ]
    prepare_sources(ctx, needed)
    files = speech_files(ctx.ext)
    files = {s: files[s] for s in VAL_SPEAKERS}
    db = analyze_speech(cache, ctx.ext, files, args.jobs)
    passed, _ = qc_speakers(files, db, args.seed)
    pools = val_speech_pools(passed)["demo"]
    fluid = {
        "train": [],
        "val": render_fluidsynth(cache, ctx.ext, "val", args.fluid_val, args.seed),
    }
    noise = {}
    for k, (kind, spec) in NOISE_VAL.items():
        fl = resolve_noise_files(ctx.ext, spec, fluid)
        noise[k] = noise_stream(kind, fl, rng_for(args.seed, "demo-noise", k), 6.0)
    n_rev = DEMO_PAIRS // 3
    rhs, rmetas = rir_set(cache, args.seed, "demo", n_rev + 1)
    r = rng_for(args.seed, "demo")
    lengths = [float(v) for v in r.uniform(3.0, 5.5, DEMO_PAIRS)]
    snrs = [int(v) for v in np.round(stratified_uniform(r, -5, 15, DEMO_PAIRS))]
    levels = [float(v) for v in r.uniform(-33, -17, DEMO_PAIRS)]
    rev = [(i % 3 == 2) for i in range(DEMO_PAIRS)]
    pairs = build_fixed_pairs(
        ctx,
        None,
        pools,
        noise,
        list(zip(rhs[:n_rev], rmetas[:n_rev], strict=True)),
        lengths,
        snrs,
        levels,
        rev,
        r,
    )
    for sub in ("clean", "noisy"):
        d = DEMO_DIR / sub
        if d.exists():
            for p in d.glob("*.wav"):
                p.unlink()
    meta = []
    for i, p in enumerate(pairs):
        write_wav16(DEMO_DIR / "clean" / clean_name(i), p["clean"])
        write_wav16(DEMO_DIR / "noisy" / noisy_name(p["snr"], i), p["noisy"])
        meta.append(
            dict(
                fileid=i,
                snr_db=p["snr"],
                level_dbfs=p["level_db"],
                reverberant=p["reverb"],
                speaker=p["speaker"],
                speech_src=p["speech_src"],
                noise_source=p["noise_source"],
                noise_src=p["noise_src"],
                rir=p["rir"],
                duration_s=round(len(p["clean"]) / SR, 3),
            )
        )
    (DEMO_DIR / "metadata.json").write_text(
        json.dumps(
            dict(
                description="Held-out demo pairs built by recipes/debian_audio/prepare.py --demo. "
                "Speakers and noises are validation-side only (never in training). "
                "For reverberant pairs the clean reference is the reverberant clean "
                "speech (DNS with_reverb convention).",
                seed=args.seed,
                pairs=meta,
            ),
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )

    # unit-test assets: a 2.5 s pair (SNR 5 dB), its noise and a short RIR
    TEST_ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    tr = rng_for(args.seed, "test-assets")
    clip, srcs = next(fixed_length_speech(ctx.ext, iter(pools["asterisk_fr_june"][-40:]), [2.5]))
    nz, nsrc = next(
        noise_stream(
            "long", resolve_noise_files(ctx.ext, NOISE_VAL["0ad_water"][1], fluid), tr, 2.5
        )
    )
    nz = fit_length(nz, len(clip), tr)
    noisy, clean_s, noise_s, lvl = mix_at_snr(clip, nz, 5.0, -25.0)
    write_wav16(TEST_ASSETS_DIR / "clean_speech.wav", clean_s)
    write_wav16(TEST_ASSETS_DIR / "noisy_speech.wav", noisy)
    write_wav16(TEST_ASSETS_DIR / "noise.wav", noise_s)
    h, hm = rhs[n_rev], rmetas[n_rev]
    h = h[: int(0.5 * SR)]
    write_wav16(TEST_ASSETS_DIR / "rir.wav", h)
    (TEST_ASSETS_DIR / "assets.json").write_text(
        json.dumps(
            dict(
                description="Small fixtures built by recipes/debian_audio/prepare.py --demo "
                "(held-out speaker and noise). noisy_speech = clean_speech + noise "
                "(each rounded to 16 bit separately).",
                clean_speech=dict(speaker="asterisk_fr_june", src=srcs),
                noise=dict(source="0ad_water", src=nsrc),
                snr_db=5.0,
                level_dbfs=round(lvl, 2),
                rir=dict(hm, note="first 0.5 s, 16-bit WAV"),
            ),
            indent=1,
        )
        + "\n"
    )
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    size += sum(p.stat().st_size for p in TEST_ASSETS_DIR.rglob("*") if p.is_file())
    log(f"demo set: {len(pairs)} pairs in {DEMO_DIR}; demo + test assets = {size / 1e6:.2f} MB")
    return 0


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Build the debian_audio speech-enhancement corpus (DNS layout) "
        "from audio in Debian packages."
    )
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument(
        "--cache",
        default=os.environ.get("FSNET_DEBIAN_AUDIO_CACHE", DEFAULT_CACHE),
        help=f"download/unpack cache, outside the repo (default {DEFAULT_CACHE})",
    )
    ap.add_argument(
        "--max-mib",
        type=float,
        default=48.0,
        help="size budget for the whole output directory in MiB (default 48)",
    )
    ap.add_argument(
        "--noise-share",
        type=float,
        default=0.25,
        help="share of the training budget spent on noise (default 0.25)",
    )
    ap.add_argument(
        "--test-pairs",
        type=int,
        default=25,
        help="fixed test pairs per condition (no_reverb, with_reverb; default 25)",
    )
    ap.add_argument("--train-rirs", type=int, default=120, help="simulated training RIRs")
    ap.add_argument("--fluid-train", type=int, default=16, help="rendered MIDI pieces (train)")
    ap.add_argument("--fluid-val", type=int, default=6, help="rendered MIDI pieces (val)")
    ap.add_argument(
        "--train-qc",
        choices=("strict", "relaxed"),
        default="strict",
        help="speech QC for the training speakers: strict (as validation) or relaxed (noise floor "
        f"{QC_TRAIN_RELAXED['min_snr_db']:g} dB under the speech, "
        f"{100 * QC_TRAIN_RELAXED['max_clip_frac']:g}%% clipped samples)",
    )
    ap.add_argument(
        "--sources",
        choices=("base", "extended", "extended_noise"),
        default="base",
        help="base: the corpus as before (byte-identical audio); extended: also the voices and "
        "noise of extended_sources.py and a second held-out test set (README); extended_noise: "
        "extended plus capped music and ambience folders (hedgewars, megaglest, widelands, flare)",
    )
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument(
        "--demo",
        action="store_true",
        help="(re)build the committed demo set assets/demo_testset and tests/assets "
        "instead of the corpus",
    )
    a = ap.parse_args(argv)
    if not 0.0 <= a.noise_share < 1.0:
        ap.error("--noise-share must be in [0, 1)")
    if a.test_pairs < 1:
        ap.error("--test-pairs must be >= 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return build_demo(args) if args.demo else build_corpus(args)
    except RecipeError as e:
        print(f"prepare.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
