#!/usr/bin/env python3
"""Build an outside test set (DNS layout, 40 pairs) from Debian packages that training never sees.

    python benchmarks/outside_testset.py --root /tmp/indep2     # ~10 s once the .debs are there
    python evaluate.py testset=/tmp/indep2/testset hydra.run.dir=/tmp/ev
    python benchmarks/outside_testset.py --root /tmp/indep2 --by-type /tmp/ev/per_file.csv

For the record only: none of these sources may train or validate a model (recipes/debian_audio
lists the ones that do), and a model is never chosen by its score here. <root>/testset_types.csv
gives each pair's noise type (music, effects, ambience) and sources; --by-type prints per-type
means from it. The SNR range sets the difficulty: the default -5..5 dB gives noisy WB-PESQ 1.14,
--snr-range-db 3 13 about 1.35 (the level of the outside set issue 6 describes); --seed draws
another pairing of the same sources.

Speech: ktuberling-data (KDE "Potato Guy"; one native speaker per language, recorded words),
        2-3 words of one speaker joined with 0.3 s silence -> 4-10 s.
Noise:  wesnoth-1.16-music (music), wesnoth-1.16-data + freeciv-data + pingus-data (one-shot
        effects in bursts), wesnoth-1.16-data sounds/ambient (ambience).
Debs are fetched with `apt-get download` into <root>/debs and unpacked with `dpkg -x` into
<root>/x (done here if missing). Licences: ktuberling-data GPL-2+/LGPL-2.1+/GFDL-1.2+; Wesnoth,
Freeciv, Pingus data GPL-2+ (see each package's /usr/share/doc/*/copyright).
"""

import argparse
import csv
import glob
import os
import subprocess
from collections import Counter, defaultdict

import numpy as np
import soundfile as sf

from fsnet.audio import load_audio
from fsnet.data import AudioEntry, mix_at_snr, read_segment

SR = 16000
N = 40
PKGS = ["ktuberling-data", "wesnoth-1.16-music", "wesnoth-1.16-data", "freeciv-data", "pingus-data"]


def ensure_pkgs(root, x_dir):
    """Download (apt-get download) and unpack (dpkg -x) each package once, under <root>."""
    debs_dir = f"{root}/debs"
    os.makedirs(debs_dir, exist_ok=True)
    for p in PKGS:
        if os.path.isdir(f"{x_dir}/{p}/usr"):
            continue
        debs = glob.glob(f"{debs_dir}/{p}_*.deb")
        if not debs:
            r = subprocess.run(
                ["apt-get", "download", p], cwd=debs_dir, capture_output=True, text=True
            )
            debs = glob.glob(f"{debs_dir}/{p}_*.deb")
            if r.returncode != 0 or not debs:
                err = (r.stderr.strip().splitlines() or ["no .deb written"])[-1]
                raise SystemExit(f"error: apt-get download {p} failed: {err}")
        os.makedirs(f"{x_dir}/{p}", exist_ok=True)
        subprocess.run(["dpkg", "-x", debs[0], f"{x_dir}/{p}"], check=True)


def load(path):
    """A whole file as mono float64 [N] at 16 kHz."""
    return load_audio(path, SR)[0].astype(np.float64)


# ---------------------------------------------------------------- speech
LANGS = ["ca", "da", "de", "el", "en", "fr", "ga", "gl", "lt", "ro", "ru", "sl", "uk", "wa", "sr"]


def speech_items(x_dir):
    """Per language: keep the dominant (rate, channels) group (= one recording session/speaker),
    drop clipped or band-limited (<16 kHz) files, take the longest words, group 2-3 words >= 4 s."""
    kt = f"{x_dir}/ktuberling-data/usr/share/ktuberling/sounds"
    per_lang = {}
    for lang in LANGS:
        files = sorted(glob.glob(f"{kt}/{lang}/*.ogg") + glob.glob(f"{kt}/{lang}/*.wav"))
        groups = defaultdict(list)
        for f in files:
            i = sf.info(f)
            groups[(i.samplerate, i.channels)].append((f, i.duration))
        (sr, ch), members = max(groups.items(), key=lambda kv: len(kv[1]))
        if sr < 16000:
            continue
        good = []
        for f, d in members:
            x, _ = sf.read(f, dtype="float64", always_2d=True)
            if np.mean(np.abs(x) >= 0.99) > 1e-4 or np.max(np.abs(x)) < 0.05:
                continue  # clipped or nearly silent
            good.append((f, d))
        good.sort(key=lambda t: (-t[1], t[0]))
        # greedily form groups from the longest words, at most 14 words per speaker
        pool, out = good[:14], []
        while pool and len(out) < 7:
            g = [pool.pop(0)]
            while pool and len(g) < 3 and sum(d for _, d in g) + 0.3 * (len(g) - 1) < 4.0:
                g.append(pool.pop(0))
            tot = sum(d for _, d in g) + 0.3 * (len(g) - 1)
            if tot < 4.0 or tot > 10.0:
                break
            out.append([f for f, _ in g])
        per_lang[lang] = out
    # allocate N pairs round-robin over languages
    items, k = [], 0
    while len(items) < N:
        added = False
        for lang in LANGS:
            if lang in per_lang and k < len(per_lang[lang]) and len(items) < N:
                items.append((lang, per_lang[lang][k]))
                added = True
        if not added:
            raise SystemExit(f"only {len(items)} speech items")
        k += 1
    return items


def make_speech(files):
    sil = np.zeros(int(0.3 * SR))
    parts = []
    for j, f in enumerate(files):
        if j:
            parts.append(sil)
        parts.append(load(f))
    return np.concatenate(parts)


# ---------------------------------------------------------------- noise
def noise_sources(x_dir):
    """(music tracks > 60 s, ambience loops, one-shot effects) under the unpacked packages."""
    wes = f"{x_dir}/wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core/sounds"
    music = sorted(
        f
        for f in glob.glob(
            f"{x_dir}/wesnoth-1.16-music/usr/share/games/wesnoth/1.16/data/core/music/*.ogg"
        )
        if sf.info(f).duration > 60
    )
    ambience = [
        f"{wes}/ambient/{n}.ogg"
        for n in ["birds1", "birds2", "birds3", "campfire", "morning", "night", "ship"]
    ]
    effects = (
        [
            f"{wes}/{n}"
            for n in [
                "axe.ogg",
                "bat-flapping.wav",
                "cave-in.ogg",
                "claws.ogg",
                "club.ogg",
                "explosion.ogg",
                "fire.wav",
                "flail.ogg",
                "fuse.ogg",
                "gold.ogg",
                "gunshot.wav",
                "horse-canter.wav",
                "lightning.ogg",
                "mace.ogg",
                "open-chest.wav",
                "rumble.ogg",
                "sword-1.ogg",
                "thunderstick.ogg",
                "torch.ogg",
                "wolf-growl-1.ogg",
                "wolf-growl-2.ogg",
                "wolf-growl-3.ogg",
                "gryphon-shriek-1.ogg",
                "gryphon-shriek-2.ogg",
                "hiss-big.wav",
                "bite.ogg",
                "water-blast.wav",
                "sling.ogg",
                "spear.ogg",
                "horse-die.ogg",
                "tusker-charge.ogg",
            ]
        ]
        + [
            f"{x_dir}/freeciv-data/usr/share/games/freeciv/stdsounds/{n}.ogg"
            for n in [
                "LrgCan",
                "LrgExpl",
                "MedCan",
                "MgBar1",
                "MgHeavy",
                "Mortar",
                "SmlExpl",
                "Splash",
                "metbrk",
                "wall01",
                "woodbrk",
            ]
        ]
        + [
            f"{x_dir}/pingus-data/usr/share/games/pingus/data/sounds/{n}.wav"
            for n in ["splash", "chink", "plop", "ting"]
        ]
    )
    return music, ambience, effects


def music_noise(path, n, rng, x_dir):
    """[n] samples of a music track, at least 10 s from either end."""
    info = sf.info(path)
    lo = int(10 * info.samplerate)
    need = int(np.ceil(n / SR * info.samplerate)) + 64
    start = int(rng.integers(lo, max(lo + 1, info.frames - need - lo)))  # at the file's rate
    entry = AudioEntry(path, info.frames, info.samplerate, info.channels)
    x = read_segment(entry, start * SR // info.samplerate, n, SR).astype(np.float64)
    return x, f"{os.path.relpath(path, x_dir)}@{start / info.samplerate:.1f}s"


def ambience_noise(path, n, rng, x_dir):
    x = load(path)
    fade = int(0.05 * SR)
    out = x.copy()
    while len(out) < n + len(x):  # tile with 50 ms crossfades
        w = np.linspace(0, 1, fade)
        out = np.concatenate([out[:-fade], out[-fade:] * (1 - w) + x[:fade] * w, x[fade:]])
    start = int(rng.integers(0, len(out) - n))
    return out[start : start + n], f"{os.path.relpath(path, x_dir)}@{start / SR:.1f}s"


def effects_noise(n, rng, EFFECTS):
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.6) * SR)
    used = []
    while pos < n - int(0.3 * SR):
        f = EFFECTS[int(rng.integers(len(EFFECTS)))]
        x = load(f)
        x = x / (np.sqrt(np.mean(x**2)) + 1e-9) * 10 ** (rng.uniform(-6, 0) / 20)
        m = min(len(x), n - pos)
        out[pos : pos + m] += x[:m]
        used.append(os.path.basename(f))
        pos += len(x) + int(rng.uniform(0.2, 1.0) * SR)
    return out, "effects:" + "+".join(used)


def summarise_by_type(per_file_csv, types_csv):
    """Print, per noise type, the mean (enhanced - noisy) change of every metric in an
    evaluate.py per_file.csv of this set (offline or streaming columns, whichever it has)."""
    for path in (per_file_csv, types_csv):
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path} not found (build the set with --root first)")
    types = {r["fileid"]: r["noise_type"] for r in csv.DictReader(open(types_csv))}
    rows = list(csv.DictReader(open(per_file_csv)))
    if not rows:
        raise SystemExit(f"error: {per_file_csv} has no rows")
    metrics = [k[len("noisy_") :] for k in rows[0] if k.startswith("noisy_")]
    mode = "offline" if f"offline_{metrics[0]}" in rows[0] else "streaming"
    changes = defaultdict(list)
    for r in rows:
        fileid = r["file"].rsplit("_", 1)[-1].split(".")[0]
        if fileid not in types:
            raise SystemExit(f"error: {r['file']} is not in {types_csv}: another set's results?")
        for m in metrics:
            changes[(types[fileid], m)].append(float(r[f"{mode}_{m}"]) - float(r[f"noisy_{m}"]))
    print("| noise type | pairs | " + " | ".join(metrics) + " |")
    print("|---|---:|" + "---:|" * len(metrics))
    for t in sorted({t for t, _ in changes}):
        means = [np.mean(changes[(t, m)]) for m in metrics]
        print(
            f"| {t} | {len(changes[(t, metrics[0])])} | "
            + " | ".join(f"{v:+.3f}" for v in means)
            + " |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/indep2", help="work folder: debs/, x/, testset/")
    parser.add_argument(
        "--snr-range-db",
        nargs=2,
        type=float,
        default=[-5.0, 5.0],
        metavar=("LOW", "HIGH"),
        help="SNR of each pair, uniform in [LOW, HIGH] dB (default -5 5: noisy WB-PESQ 1.14; "
        "the other draws do not depend on it, so two ranges give the same speech and noise)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2026,
        help="mixing draws (SNR, level); seed + 1 draws the pairing, offsets and effect bursts",
    )
    parser.add_argument(
        "--by-type",
        metavar="PER_FILE_CSV",
        help="instead of building: per noise type means of an evaluate.py per_file.csv of <root>",
    )
    args = parser.parse_args()
    root = args.root
    if args.by_type:
        summarise_by_type(args.by_type, f"{root}/testset_types.csv")
        return
    snr_low_db, snr_high_db = args.snr_range_db
    if not snr_low_db <= snr_high_db:
        parser.error(f"--snr-range-db: LOW {snr_low_db} is above HIGH {snr_high_db}")
    x_dir, out_dir = f"{root}/x", f"{root}/testset"
    ensure_pkgs(root, x_dir)
    MUSIC, AMBIENCE, EFFECTS = noise_sources(x_dir)
    for d in ("clean", "noisy"):
        os.makedirs(f"{out_dir}/{d}", exist_ok=True)
    rng = np.random.default_rng(args.seed)  # mixing draws
    snrs = rng.uniform(snr_low_db, snr_high_db, N)
    levels = rng.uniform(-30, -20, N)
    aux = np.random.default_rng(args.seed + 1)  # assignment, offsets, effect bursts

    items = speech_items(x_dir)
    order = aux.permutation(N)
    items = [items[i] for i in order]
    types = np.array(["music"] * 16 + ["effects"] * 16 + ["ambience"] * 8)[aux.permutation(N)]
    music = list(aux.permutation(MUSIC))[:16]
    amb = list(aux.permutation(AMBIENCE)) + [AMBIENCE[int(aux.integers(len(AMBIENCE)))]]

    rows = []
    for i in range(N):
        lang, files = items[i]
        s = make_speech(files)
        n = len(s)
        assert 4 * SR <= n <= 10 * SR, (i, n / SR)
        t = types[i]
        if t == "music":
            noise, nsrc = music_noise(music.pop(), n, aux, x_dir)
        elif t == "ambience":
            noise, nsrc = ambience_noise(amb.pop(), n, aux, x_dir)
        else:
            noise, nsrc = effects_noise(n, aux, EFFECTS)
        noisy, clean = mix_at_snr(s, noise, float(snrs[i]), float(levels[i]), dtype=np.float64)
        sf.write(f"{out_dir}/clean/clean_fileid_{i}.wav", clean, SR, subtype="PCM_16")
        sf.write(f"{out_dir}/noisy/noisy_fileid_{i}.wav", noisy, SR, subtype="PCM_16")
        ssrc = f"ktuberling-data:{lang}:" + "+".join(os.path.basename(f) for f in files)
        rows.append([i, t, ssrc, nsrc, f"{snrs[i]:.2f}"])
        print(i, t, f"{n / SR:.2f}s", ssrc, nsrc[:80], f"snr={snrs[i]:.2f}", flush=True)

    with open(f"{root}/testset_types.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fileid", "noise_type", "speech_source", "noise_source", "snr_db"])
        w.writerows(rows)
    print(Counter(types.tolist()), Counter(lang for lang, _ in items))


if __name__ == "__main__":
    main()
