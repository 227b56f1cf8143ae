"""Fast checks of the committed demo set, the unit-test audio assets and the
pure helpers of recipes/debian_audio/prepare.py (no downloads, no network)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo_testset"
TEST_ASSETS = ROOT / "tests" / "assets"
RECIPE = ROOT / "recipes" / "debian_audio" / "prepare.py"
SR = 16000


def _load_recipe():
    name = "fsnet_recipe_debian_audio_prepare"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RECIPE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


prep = _load_recipe()


def _read(path: Path):
    info = sf.info(str(path))
    x, fs = sf.read(str(path), dtype="int16")
    return info, fs, x


def _demo_pairs():
    clean = {prep.parse_fileid(p.name): p for p in (DEMO / "clean").glob("*.wav")}
    noisy = {prep.parse_fileid(p.name): p for p in (DEMO / "noisy").glob("*.wav")}
    return clean, noisy


# ---------------------------------------------------------------------------
# committed demo set
# ---------------------------------------------------------------------------


def test_demo_pairs_match_by_fileid():
    clean, noisy = _demo_pairs()
    assert len(clean) >= 30
    assert set(clean) == set(noisy)
    for fid, p in clean.items():
        assert p.name == f"clean_fileid_{fid}.wav"
        assert re.fullmatch(rf"noisy_snr-?\d+_fileid_{fid}\.wav", noisy[fid].name)


def test_demo_audio_format_and_content():
    clean, noisy = _demo_pairs()
    for fid in clean:
        ci, cfs, c = _read(clean[fid])
        ni, nfs, n = _read(noisy[fid])
        for info, fs in ((ci, cfs), (ni, nfs)):
            assert fs == SR and info.channels == 1 and info.subtype == "PCM_16"
            assert info.format == "WAV"
        assert len(c) == len(n)
        assert 3.0 <= len(c) / SR <= 6.0
        # no clipping: nothing at (or next to) full scale
        assert np.max(np.abs(c.astype(np.int32))) < 32700
        assert np.max(np.abs(n.astype(np.int32))) < 32700
        assert not np.array_equal(c, n)
        assert np.sqrt(np.mean(c.astype(np.float64) ** 2)) > 30  # not silent


def test_demo_snr_matches_filename():
    clean, noisy = _demo_pairs()
    for fid in clean:
        snr = int(re.search(r"_snr(-?\d+)_", noisy[fid].name).group(1))
        assert -5 <= snr <= 15
        c = sf.read(str(clean[fid]))[0]
        n = sf.read(str(noisy[fid]))[0]
        assert abs(prep.snr_db(c, n - c) - snr) < 0.3


def test_demo_metadata_and_size():
    meta = json.loads((DEMO / "metadata.json").read_text())
    pairs = meta["pairs"]
    clean, noisy = _demo_pairs()
    assert sorted(p["fileid"] for p in pairs) == sorted(clean)
    assert any(p["reverberant"] for p in pairs) and not all(p["reverberant"] for p in pairs)
    # only held-out (validation-side) speakers and noises in the demo set
    assert {p["speaker"] for p in pairs} <= set(prep.VAL_SPEAKERS)
    assert {p["noise_source"] for p in pairs} <= set(prep.NOISE_VAL)
    for p in pairs:
        assert noisy[p["fileid"]].name == prep.noisy_name(p["snr_db"], p["fileid"])
    total = sum(p.stat().st_size for d in (DEMO, TEST_ASSETS) for p in d.rglob("*") if p.is_file())
    assert total <= 20_000_000


def test_split_is_disjoint():
    assert not set(prep.TRAIN_SPEAKERS) & set(prep.VAL_SPEAKERS)
    # the two asterisk prompt sets by Allison Smith stay on the same side
    assert {"asterisk_en_allison", "asterisk_es_allison"} <= set(prep.TRAIN_SPEAKERS)
    assert not set(prep.GM_TRAIN_PROGRAMS) & set(prep.GM_VAL_PROGRAMS)


# ---------------------------------------------------------------------------
# tests/assets
# ---------------------------------------------------------------------------


def test_unit_test_assets():
    names = ("clean_speech.wav", "noisy_speech.wav", "noise.wav")
    data = {}
    for nm in names:
        info, fs, x = _read(TEST_ASSETS / nm)
        assert fs == SR and info.channels == 1 and info.subtype == "PCM_16"
        assert len(x) / SR <= 3.0
        data[nm] = x.astype(np.int32)
    c, n, z = (data[nm] for nm in names)
    assert len(c) == len(n) == len(z)
    assert np.max(np.abs(n - (c + z))) <= 2  # noisy = clean + noise
    assert abs(prep.snr_db(c, n - c) - 5.0) < 0.2
    info, fs, h = _read(TEST_ASSETS / "rir.wav")
    assert fs == SR and info.channels == 1 and len(h) <= SR
    assert int(np.argmax(np.abs(h))) < 64  # direct path near the start


# ---------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------


def test_mix_at_snr_exact_snr_and_level():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(SR) * 0.05
    noise = rng.standard_normal(SR) * 0.3
    for snr in (-5.0, 0.0, 7.0, 20.0):
        noisy, c, z, lvl = prep.mix_at_snr(clean, noise, snr, -25.0)
        assert np.allclose(noisy, c + z)
        assert prep.snr_db(c, z) == pytest.approx(snr, abs=1e-6)
        assert prep.rms_db(noisy) == pytest.approx(-25.0, abs=1e-6)
        assert lvl == pytest.approx(-25.0, abs=1e-6)
        # the clean reference is scaled by the same gain as the mixture
        assert np.allclose(c / clean, c[0] / clean[0])


def test_mix_at_snr_never_clips():
    rng = np.random.default_rng(1)
    clean = np.zeros(SR)
    clean[100:200] = 1.0  # very peaky speech
    noise = rng.standard_normal(SR)
    noisy, c, z, lvl = prep.mix_at_snr(clean, noise, 10.0, -10.0)
    assert max(np.max(np.abs(noisy)), np.max(np.abs(c))) <= prep.MIX_PEAK_LIMIT + 1e-12
    assert lvl < -10.0
    assert prep.snr_db(c, z) == pytest.approx(10.0, abs=1e-6)
    prep.to_pcm16(noisy)  # must not raise


def test_mix_rejects_silence_and_shape_mismatch():
    with pytest.raises(ValueError):
        prep.mix_at_snr(np.zeros(100), np.ones(100), 0.0, -25.0)
    with pytest.raises(ValueError):
        prep.mix_at_snr(np.ones(100), np.zeros(100), 0.0, -25.0)
    with pytest.raises(ValueError):
        prep.mix_at_snr(np.ones(100), np.ones(99), 0.0, -25.0)


def test_to_pcm16():
    x = np.array([0.0, 0.5, -0.5, -1.0, 32767 / 32768])
    y = prep.to_pcm16(x)
    assert y.dtype == np.int16 and list(y) == [0, 16384, -16384, -32768, 32767]
    with pytest.raises(ValueError):
        prep.to_pcm16(np.array([1.01]))


def _tone_bursts(rng):
    t = np.arange(int(0.5 * SR)) / SR
    burst = 0.3 * np.sin(2 * np.pi * 440 * t)
    quiet = lambda s: rng.standard_normal(int(s * SR)) * 1e-4  # noqa: E731
    return np.concatenate([quiet(1.0), burst, quiet(2.0), burst, quiet(1.0)])


def test_trim_and_compact():
    rng = np.random.default_rng(3)
    x = _tone_bursts(rng)  # 5 s with 1 s + 2 s + 1 s of quiet
    y = prep.trim_and_compact(x, SR, margin_s=0.1, max_pause_s=0.3)
    # two 0.5 s bursts + 2 x 0.1 s margins + one 0.3 s pause (+/- a few frames)
    assert 1.35 <= len(y) / SR <= 1.65
    lev = prep.frame_levels_db(y)
    assert lev[0] < -60 and lev[-1] < -60  # keeps a little room tone
    assert prep.trim_and_compact(np.zeros(SR), SR).size == 0


def test_normalize_active_level_and_peak_limit():
    rng = np.random.default_rng(4)
    x = _tone_bursts(rng)
    y, g = prep.normalize_active_level(x, -40.0)
    assert prep.active_level_db(y) == pytest.approx(-40.0, abs=0.5)
    y, g = prep.normalize_active_level(x, -3.0)  # would exceed the peak limit
    assert np.max(np.abs(y)) == pytest.approx(prep.CLEAN_PEAK_LIMIT)


def test_fit_length_and_concat():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1000)
    assert len(prep.fit_length(x, 400, rng)) == 400
    y = prep.fit_length(x, 3500, rng)
    assert len(y) == 3500 and np.all(np.isfinite(y))
    z = prep.concat_xfade([np.ones(100), np.ones(100)], 10)
    assert len(z) == 190 and np.allclose(z, 1.0)


def test_names_and_fileids():
    assert prep.noisy_name(-5, 3) == "noisy_snr-5_fileid_3.wav"
    assert prep.clean_name(12) == "clean_fileid_12.wav"
    assert prep.parse_fileid("book_x_snr5_tl-21_fileid_120.wav") == 120
    with pytest.raises(ValueError):
        prep.parse_fileid("clean.wav")


def test_recipe_names_pair_in_training_validation(tmp_path):
    """The recipe names its test pairs, training's validation pairs them: one rule
    (fsnet.audio.fileid) for both, so every pair the recipe writes is a validation pair."""
    from fsnet.audio import fileid
    from fsnet.data.corpus import _pair_subset

    subset = tmp_path / "no_reverb"
    x = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    written = {}
    for number, snr in ((0, -5), (7, 20), (120, 5), (3001, 0)):
        noisy, clean = prep.noisy_name(snr, number), prep.clean_name(number)
        assert fileid(noisy) == fileid(clean) == prep.parse_fileid(noisy) == number
        for folder, name in (("noisy", noisy), ("clean", clean)):
            (subset / folder).mkdir(parents=True, exist_ok=True)
            sf.write(subset / folder / name, x, SR)
        written[number] = (noisy, clean)
    pairs, problems = _pair_subset(subset, "error")
    assert not problems
    assert {p.fileid: (Path(p.noisy).name, Path(p.clean).name) for p in pairs} == written
    # the rule anchors fileid_N at the end of the name: a suffix after it does not pair
    assert fileid("noisy_snr5_fileid_7_copy.wav") is None
    with pytest.raises(ValueError):
        prep.parse_fileid("noisy_snr5_fileid_7_copy.wav")


def test_stratified_uniform_covers_range():
    rng = np.random.default_rng(6)
    v = prep.stratified_uniform(rng, -5, 20, 25)
    assert v.min() >= -5 and v.max() <= 20
    assert np.histogram(v, bins=5, range=(-5, 20))[0].tolist() == [5] * 5


def test_midi_is_valid_and_deterministic():
    a, da = prep.compose_midi(42, prep.GM_TRAIN_PROGRAMS, seconds=10)
    b, db = prep.compose_midi(42, prep.GM_TRAIN_PROGRAMS, seconds=10)
    c, _ = prep.compose_midi(43, prep.GM_TRAIN_PROGRAMS, seconds=10)
    assert a == b and da == db and a != c
    assert a[:4] == b"MThd" and a[14:18] == b"MTrk"
    assert int.from_bytes(a[18:22], "big") == len(a) - 22
    assert a.endswith(b"\x00\xff\x2f\x00")
    assert da["chord_program"] in prep.GM_TRAIN_PROGRAMS
    assert prep._vlq(0) == b"\x00" and prep._vlq(0x80) == b"\x81\x00"


def test_synth_stationary_spectral_slopes():
    rng = np.random.default_rng(7)
    f = np.fft.rfftfreq(SR * 4, 1 / SR)
    slopes = {}
    for kind in prep.SYNTH_KINDS:
        x = prep.synth_stationary(kind, SR * 4, rng)
        assert prep.rms(x) == pytest.approx(1.0)
        p = np.abs(np.fft.rfft(x)) ** 2
        lo = p[(f > 200) & (f < 400)].mean()
        hi = p[(f > 3200) & (f < 6400)].mean()
        slopes[kind] = 10 * np.log10(hi / lo)
    assert slopes["white"] > slopes["pink"] > slopes["brown"]


def _utterance_metrics(snr_db: float, clip: float) -> dict:
    """Analysis numbers of a clean, full-band 3 s utterance, with the given floor and clipping."""
    return dict(
        sr=44100, dur=3.0, clip=clip, active=2.5, trimmed=2.8, level=-30.0,
        floor=-30.0 - snr_db, hf=-20.0, bw=-25.0,
    )  # fmt: skip


def test_relaxed_train_qc_reaches_training_speakers_only():
    train, held_out = prep.TRAIN_SPEAKERS[0], prep.VAL_SPEAKERS[0]
    db = {
        "floor27": _utterance_metrics(27.0, 0.0),  # floor 27 dB down: strict rejects (30)
        "clip5e-4": _utterance_metrics(40.0, 5e-4),  # 0.05 % clipped: strict rejects (1e-4)
        "floor20": _utterance_metrics(20.0, 0.0),  # too noisy for either
        "clean": _utterance_metrics(40.0, 0.0),
    }
    files = {spk: sorted(db) for spk in (train, held_out)}
    strict, _ = prep.qc_speakers(files, db, seed=1)
    relaxed, report = prep.qc_speakers(files, db, seed=1, train_qc="relaxed")
    assert sorted(strict[train]) == sorted(strict[held_out]) == ["clean"]
    assert sorted(relaxed[train]) == ["clean", "clip5e-4", "floor27"]
    assert relaxed[held_out] == ["clean"]  # validation and test speech keep the strict QC
    assert report[train]["rejected"] == {"noisy": 1}
    assert prep.parse_args(["--train-qc", "relaxed"]).train_qc == "relaxed"
    assert prep.parse_args([]).train_qc == "strict"


def test_split_parts_stay_under_the_limit_and_keep_every_file(tmp_path):
    spec = importlib.util.spec_from_file_location("split_parts", RECIPE.parent / "split_parts.py")
    split_parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_parts)
    src = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    for i in range(6):  # incompressible bytes, so the sizes are what the limit sees
        for folder in ("clean/a", "noise/n"):
            (src / folder).mkdir(parents=True, exist_ok=True)
            (src / folder / f"f{i}.flac").write_bytes(rng.bytes(30_000))
    (src / "rir").mkdir()
    (src / "rir" / "r.flac").write_bytes(rng.bytes(5_000))
    (src / "manifest.json").write_text("{}")
    for condition in ("no_reverb", "with_reverb"):
        for kind, name in (("noisy", "noisy_snr5_fileid_0.wav"), ("clean", "clean_fileid_0.wav")):
            path = src / "test_set" / "synthetic" / condition / kind / name
            path.parent.mkdir(parents=True)
            sf.write(path, (rng.standard_normal(1600) * 3000).astype(np.int16), SR)
    limit_bytes = 70_000  # two files a part: the noise (a third of the corpus) must spread too
    parts = split_parts.split(src, tmp_path / "parts", limit_bytes, val_pairs=1)
    sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in parts]
    assert len(parts) >= 6 and max(sizes) <= limit_bytes, sizes
    assert [p.name for p in parts] == [f"p{n}" for n in range(1, len(parts) + 1)]
    merged = {
        f.relative_to(p / "debian_audio").as_posix()
        for p in parts
        for f in p.rglob("*")
        if f.is_file()
    }
    expected = {
        f.relative_to(src).as_posix()
        for f in src.rglob("*")
        if f.is_file() and not f.as_posix().endswith(".wav")
    }
    flac_pairs = {m for m in merged if m.startswith("test_set/")}
    assert merged - flac_pairs == expected and len(flac_pairs) == 4
    with pytest.raises(SystemExit, match=r"clean/a/f0.flac \(0.0 MiB\) is larger than"):
        split_parts.split(src, tmp_path / "parts", 10_000, val_pairs=1)
    # the first command also carries the wheels: its part has a limit of its own
    parts = split_parts.split(src, tmp_path / "parts", limit_bytes, 1, first_part_bytes=35_000)
    sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in parts]
    assert sizes[0] <= 35_000 and max(sizes[1:]) <= limit_bytes and max(sizes[1:]) > 35_000, sizes


def _ship_rule_summary(folder: Path, pesq: float, ovrl: float, stoi: float, noisy_stoi: float):
    results = {
        "pesq_wb": {"noisy": 1.3, "enhanced": pesq},
        "dnsmos_ovrl": {"noisy": 1.5, "enhanced": ovrl},
        "stoi": {"noisy": noisy_stoi, "enhanced": stoi},
    }
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"results": {"offline": results}}))
    return str(folder)


def test_ship_rule_needs_pesq_and_ovrl_up_on_every_set(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ship_rule", RECIPE.parent / "ship_rule.py")
    ship_rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship_rule)
    bundled = [_ship_rule_summary(tmp_path / f"b{i}", 1.80, 2.00, 0.80, 0.75) for i in range(2)]

    def decide(*candidate_scores) -> int:
        folders = [
            _ship_rule_summary(tmp_path / f"c{decide.n}_{i}", *scores)
            for i, scores in enumerate(candidate_scores)
        ]
        decide.n += 1
        return ship_rule.main(["--candidate", *folders, "--bundled", *bundled])

    decide.n = 0
    assert decide((1.85, 2.05, 0.81, 0.75), (1.81, 2.01, 0.80, 0.75)) == 0
    assert decide((1.85, 2.05, 0.81, 0.75), (1.90, 1.99, 0.80, 0.75)) == 1  # OVRL fell on one set
    assert "dnsmos_ovrl 1.990 <= 2.000" in capsys.readouterr().out
    assert decide((1.80, 2.05, 0.81, 0.75), (1.81, 2.01, 0.80, 0.75)) == 1  # PESQ only equal
    assert decide((1.85, 2.05, 0.70, 0.75), (1.81, 2.01, 0.80, 0.75)) == 1  # STOI below noisy
    assert "STOI below" in capsys.readouterr().out
    other_set = _ship_rule_summary(tmp_path / "other", 1.85, 2.05, 0.81, 0.70)
    other = json.loads((Path(other_set) / "summary.json").read_text())
    other["results"]["offline"]["pesq_wb"]["noisy"] = 1.1  # a different set's noisy input
    (Path(other_set) / "summary.json").write_text(json.dumps(other))
    assert ship_rule.main(["--candidate", other_set, "--bundled", bundled[0]]) == 2


# ---------------------------------------------------------------------------
# --sources extended (issue 26): speakers from file names, exclusions, split
# ---------------------------------------------------------------------------

xs = prep.xs
HW = "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
MG = "megaglest-data/usr/share/games/megaglest/techs/megapack"


def test_hedgewars_speaker_from_pack_and_line_names():
    assert xs.hedgewars_speaker(f"{HW}/British/Amazing.ogg") == "hedgewars_british"
    assert xs.hedgewars_speaker(f"{HW}/Default_pl/Incoming.ogg") == "hedgewars_default_pl"
    assert xs.hedgewars_speaker(f"{HW}/Default/Uh-oh.ogg") == "hedgewars_default"
    assert xs.hedgewars_speaker(f"{HW}/Robot/Amazing.ogg") is None  # vocoded voice
    for grunt in (
        "Ow1",
        "Ooff3",
        "Jump2",
        "Firepunch6",
        "PoisonCough",
        "PoisonMoan",
        "Laugh",
        "Hmm",
    ):
        assert xs.hedgewars_speaker(f"{HW}/British/{grunt}.ogg") is None, grunt
    # a speech line that only starts like a grunt stays
    assert xs.hedgewars_speaker(f"{HW}/British/Ouch.ogg") == "hedgewars_british"
    assert xs.hedgewars_speaker(f"{HW}/British/Ohdear.ogg") == "hedgewars_british"


def test_zeroad_voice_kajongg_and_fillets_speakers():
    voice = "0ad-data/audio/voice"
    assert xs.zeroad_voice_speaker(f"{voice}/napatan/civ/civ_female_heal_1.ogg") == (
        "0ad_napatan_female"
    )
    assert xs.zeroad_voice_speaker(f"{voice}/greek/civ/civ_male_yes_1.ogg") == "0ad_greek_male"
    assert xs.zeroad_voice_speaker(f"{voice}/global/civ_dog_bark.ogg") is None
    kv = "kajongg/usr/share/kajongg/voices"
    assert xs.kajongg_speaker(f"{kv}/male2/pung.ogg") == "kajongg_male2"
    assert xs.kajongg_speaker(f"{kv}/de/male2/b1.ogg") == "kajongg_male2"  # same voice
    assert xs.kajongg_speaker(f"{kv}/female1/b1.ogg") is None  # fails QC: not used
    # the Czech data's rule, now shared with the Dutch data
    assert xs.fillets_speaker("let-m-divna", "nl") == "fillets_nl_m"
    assert xs.fillets_speaker("let-v-jo", "cs") == "fillets_cs_v"
    assert xs.fillets_speaker("let-3-jo", "nl") == "fillets_nl_other"
    assert xs.fillets_speaker("intro", "nl") == "fillets_nl_other"


def test_megaglest_speaker_keeps_human_unit_voices_only():
    sounds = f"{MG}/commondata/sounds"
    assert xs.megaglest_speaker(f"{sounds}/archer_ack10.wav") == "megaglest_archer"
    assert xs.megaglest_speaker(f"{sounds}/axe_thrower_select3.wav") == "megaglest_axe_thrower"
    unit = f"{MG}/factions/egypt/units/anubis_warrior/sounds/warrior_select1.wav"
    assert xs.megaglest_speaker(unit) == "megaglest_warrior"
    for creature in ("golem_ack1", "daemon_select2", "cow_ack1", "evil_dragon_ack1", "dr_ack1"):
        assert xs.megaglest_speaker(f"{sounds}/{creature}.wav") is None, creature
    for effect in ("archer_attack1", "swordman_die2", "worker_hit1", "worker_work1"):
        assert xs.megaglest_speaker(f"{sounds}/{effect}.wav") is None, effect


def test_extended_speech_files_count_a_copied_recording_once(tmp_path):
    def put(rel, data=b"RIFF"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    put(f"{MG}/commondata/sounds/archer_ack1.wav", b"one")
    put(f"{MG}/factions/indian/units/archer/sounds/archer_ack1.wav", b"one")  # a copy
    put(f"{MG}/factions/indian/units/archer/sounds/archer_ack2.wav", b"two")
    put(f"{MG}/commondata/sounds/golem_ack1.wav", b"three")
    put(f"{HW}/Mobster/Hello.ogg")
    put(f"{HW}/Mobster/Ow1.ogg")
    put("fillets-ng-data-nl/usr/share/games/fillets-ng/sound/bar/nl/bar-m-hoi.ogg")
    files = xs.extended_speech_files(tmp_path)
    assert len(files["megaglest_archer"]) == 2
    assert "megaglest_golem" not in files
    assert [Path(r).name for r in files["hedgewars_mobster"]] == ["Hello.ogg"]
    assert list(files["fillets_nl_m"]) == [
        "fillets-ng-data-nl/usr/share/games/fillets-ng/sound/bar/nl/bar-m-hoi.ogg"
    ]


def test_extended_noise_rules():
    assert xs.lincity_split("TraficHigh2.wav") == "train"
    assert xs.lincity_split("SportsCroud1.wav") == "val"
    assert xs.lincity_split("RailTrain3.wav") == "val"
    for ui in ("Click.wav", "WindowOpen.wav", "WindowClose.wav"):
        assert xs.lincity_split(ui) is None
    globs = [g for _, specs in xs.EXTENDED_NOISE_TRAIN.values() for g in specs]
    globs += [g for _, specs in xs.EXTENDED_NOISE_VAL.values() for g in specs]
    assert not any("Vocals" in g for g in globs)  # scratch's singing is not noise


def test_extended_split_and_switch():
    base, ext = prep.Sources("base"), prep.Sources("extended")
    # base is the corpus as before: same packages, speakers and noise
    assert base.packages == prep.PACKAGES and base.train_speakers == prep.TRAIN_SPEAKERS
    assert base.noise_train == prep.NOISE_TRAIN and not base.extra_val_speakers
    assert prep.parse_args([]).sources == "base"
    assert prep.parse_args(["--sources", "extended"]).sources == "extended"
    # extended keeps the base test set's speakers and holds out new ones
    assert ext.val_speakers == prep.VAL_SPEAKERS
    held_out = set(ext.val_speakers) | set(ext.extra_val_speakers)
    assert not set(ext.train_speakers) & held_out
    assert {"fillets_nl_m", "fillets_nl_v", "fillets_nl_other"} <= set(ext.extra_val_speakers)
    assert all(s in ext.credit for s in ext.train_speakers + ext.extra_val_speakers)
    assert not set(ext.noise_train) & set(ext.extra_noise_val) - {"lincity_city"}
    reserved = ("asterisk-core-sounds-it", "asterisk-moh", "klettres", "openclonk", "sonic-pi",
                "tuxpaint-data", "ktuberling")  # fmt: skip
    assert not [p for p in ext.packages for r in reserved if p.startswith(r)]


def test_cycled_noise_stream_restarts_and_stops_when_empty():
    streams = {0: ["a", "b"], 1: ["c"], 2: []}
    assert list(prep._cycled(lambda i: iter(streams[i]))) == ["a", "b", "c"]


def test_split_parts_carry_the_extra_test_set(tmp_path):
    spec = importlib.util.spec_from_file_location("split_parts", RECIPE.parent / "split_parts.py")
    split_parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(split_parts)
    src = tmp_path / "corpus"
    (src / "clean" / "a").mkdir(parents=True)
    (src / "clean" / "a" / "f.flac").write_bytes(b"x" * 100)
    (src / "manifest.json").write_text("{}")
    rng = np.random.default_rng(0)
    for test_set in ("synthetic", "synthetic_extra"):
        for condition in ("no_reverb", "with_reverb"):
            for i in range(3):
                for kind, name in (
                    ("noisy", f"noisy_snr5_fileid_{i}.wav"),
                    ("clean", f"clean_fileid_{i}.wav"),
                ):
                    path = src / "test_set" / test_set / condition / kind / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(path, (rng.standard_normal(800) * 3000).astype(np.int16), SR)
    parts = split_parts.split(src, tmp_path / "parts", 10_000_000, val_pairs=2)
    flacs = sorted(
        f.relative_to(parts[0] / "debian_audio").as_posix() for f in parts[0].rglob("*.flac")
    )
    extra = [f for f in flacs if f.startswith("test_set/synthetic_extra/")]
    assert len(extra) == 8 and len(flacs) == 1 + 16  # 2 pairs x 2 conditions x 2 sets, + speech
    assert "test_set/synthetic_extra/with_reverb/noisy/noisy_snr5_fileid_1.flac" in extra


# ---------------------------------------------------------------------------
# --sources extended_noise: more music and ambience folders
# ---------------------------------------------------------------------------

HWM = "hedgewars-data/usr/share/games/hedgewars/Data/Music"
MGS = "megaglest-data/usr/share/games/megaglest/tilesets"


def test_hedgewars_music_split_holds_out_whole_tracks(tmp_path):
    assert xs.hedgewars_music_split("Castle.ogg") == "train"
    assert xs.hedgewars_music_split("oriental.ogg") == "val"
    assert xs.hedgewars_music_split("credits.txt") is None
    for name in ("Castle.ogg", "Nature.ogg", "credits.txt"):
        (tmp_path / HWM).mkdir(parents=True, exist_ok=True)
        (tmp_path / HWM / name).write_bytes(b"x")
    train = [p.name for p in xs.extra_noise_files(tmp_path, "@hedgewars_music_train")]
    val = [p.name for p in xs.extra_noise_files(tmp_path, "@hedgewars_music_val")]
    assert (train, val) == (["Castle.ogg"], ["Nature.ogg"])
    assert xs.extra_noise_files(tmp_path, "@fluid_train") is None  # not this module's


def test_megaglest_ambience_keeps_long_loops_once(tmp_path):
    def put(rel, data):
        p = tmp_path / MGS / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    put("autumn/sounds/rain.ogg", b"rain")
    put("autumn/sounds/owl.ogg", b"owl")  # a single call, not ambience
    put("winter/sounds/wind.ogg", b"wind")
    put("winter_forest/sounds/wind.ogg", b"wind")  # the same recording copied
    put("desert2/sounds/rain.wav", b"desert rain")
    link = tmp_path / MGS / "desert4/sounds/rain.wav"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../desert2/sounds/rain.wav")  # shared by link, as in the package
    rels = [p.relative_to(tmp_path / MGS).as_posix() for p in xs.megaglest_ambience_files(tmp_path)]
    assert rels == ["autumn/sounds/rain.ogg", "desert2/sounds/rain.wav", "winter/sounds/wind.ogg"]


def test_extended_noise_choice_adds_capped_folders_only():
    ext, more = prep.Sources("extended"), prep.Sources("extended_noise")
    assert prep.parse_args(["--sources", "extended_noise"]).sources == "extended_noise"
    # extended is as before: no new package, no new folder
    assert not ext.more_noise and not set(ext.packages) & set(xs.MORE_NOISE_PACKAGES)
    assert set(ext.packages) == set(prep.PACKAGES) | set(xs.EXTENDED_PACKAGES)
    # extended_noise = extended + the new folders; speakers and held-out sets unchanged
    assert more.train_speakers == ext.train_speakers and more.noise_train == ext.noise_train
    assert more.extra_val_speakers == ext.extra_val_speakers
    assert more.extra_noise_val == ext.extra_noise_val and more.noise_val == ext.noise_val
    assert set(more.more_noise) == set(xs.MORE_NOISE_MAX_CLIPS)
    assert not set(more.more_noise) & (set(more.noise_train) | set(more.noise_val))
    assert set(more.packages) == set(ext.packages) | set(xs.MORE_NOISE_PACKAGES)
    # never the outside test set's games nor the sources reserved for independent evaluation
    reserved = ("wesnoth", "freeciv", "pingus", "asterisk-moh", "klettres", "openclonk",
                "sonic-pi", "ktuberling", "tuxpaint-data")  # fmt: skip
    globs = [g for _, specs in more.more_noise.values() for g in specs]
    assert not [p for p in more.packages for r in reserved if p.startswith(r)]
    assert not [g for g in globs for r in reserved if r in g.lower()]
    # the held-out hedgewars tracks never reach training
    assert "@hedgewars_music_val" not in globs


def test_write_noise_folders_caps_each_folder(tmp_path):
    import soundfile as sf

    ext = tmp_path / "extract"
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (ext / folder).mkdir(parents=True)
        for i in range(2):  # 31 s each: up to three 10 s excerpts per file
            noise = 0.05 * rng.standard_normal(31 * prep.SR)
            sf.write(ext / folder / f"t{i}.wav", noise, prep.SR, subtype="PCM_16")
    ctx = prep.Ctx(cache=tmp_path, ext=ext, seed=3, jobs=1)
    w = prep.Writer(tmp_path / "out")
    specs = {"a_music": ("long", ["a/*.wav"]), "b_ambience": ("long", ["b/*.wav"])}
    prep.write_noise_folders(ctx, w, specs, {}, {"a_music": 2, "b_ambience": 100})
    assert w.groups["noise/a_music"]["files"] == 2  # capped
    assert 2 < w.groups["noise/b_ambience"]["files"] <= 6  # what the files hold
    assert (tmp_path / "out/noise/a_music/a_music_0002.ogg").is_file()
    assert not (tmp_path / "out/noise/a_music/a_music_0003.ogg").exists()
