"""fsnet.data: corpus scanning, on-the-fly mixing, determinism, bad files, the prepare script."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fsnet.cli import one_line
from fsnet.data import (
    AudioEntry,
    DnsDataModule,
    MixingConfig,
    TrainingMixtures,
    UnpaddedDistributedSampler,
    ValidationPairs,
    collate_validation,
    group_noise_files,
    mix_at_snr,
    rms_dbfs,
    scan_corpus,
)
from fsnet.errors import FsnetError


def snr_db(noisy: np.ndarray, target: np.ndarray) -> float:
    target = target.astype(np.float64)
    noise = noisy.astype(np.float64) - target
    return 10 * math.log10(np.sum(target**2) / np.sum(noise**2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One shared tree (read-only use): 16 kHz WAV with RIRs."""
    from conftest import make_fake_dns_tree

    tree = make_fake_dns_tree(tmp_path_factory.mktemp("corpus") / "dns")
    return tree, scan_corpus(tree.root, tree.rir_root)


# ------------------------------------------------------------------------------------ mixing
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 20.0])
def test_mix_at_snr_exact_snr_and_level(snr):
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(16000).astype(np.float32) * 0.1
    noise = rng.standard_normal(16000).astype(np.float32) * 0.3
    noisy, target = mix_at_snr(clean, noise, snr, -25.0)
    assert abs(snr_db(noisy, target) - snr) < 0.1
    assert abs(rms_dbfs(noisy) - (-25.0)) < 0.01
    assert noisy.dtype == np.float32 and target.dtype == np.float32


def test_mix_at_snr_never_clips_and_keeps_snr():
    rng = np.random.default_rng(2)
    clean = rng.standard_normal(8000) * 0.1
    clean[100] = 5.0  # a huge peak: -5 dBFS RMS would push it far beyond full scale
    noise = rng.standard_normal(8000)
    noisy, target = mix_at_snr(clean, noise, 3.0, -5.0)
    assert np.abs(noisy).max() <= 0.999 + 1e-6
    assert np.abs(target).max() <= 0.999 + 1e-6
    assert abs(snr_db(noisy, target) - 3.0) < 0.1
    assert rms_dbfs(noisy) < -5.0  # scaled down below the requested level


def test_mix_at_snr_silent_noise_gives_clean():
    clean = np.sin(np.arange(4000) / 10).astype(np.float32) * 0.1
    noisy, target = mix_at_snr(clean, np.zeros(4000, np.float32), 5.0, -20.0)
    np.testing.assert_allclose(noisy, target)


def test_mixing_config_rejects_bad_values():
    with pytest.raises(FsnetError, match="snr_range_db"):
        MixingConfig(snr_range_db=(20, -5))
    with pytest.raises(FsnetError, match="reverb_probability"):
        MixingConfig(reverb_probability=1.5)


def test_training_examples_snr_level_peak(corpus):
    _, lists = corpus
    ds = TrainingMixtures(
        lists.clean, lists.noise, lists.rir, MixingConfig(), samples_per_epoch=40, seed=3
    )
    reverberated = 0
    for i in range(40):
        noisy, target, info = ds.generate(i)
        assert noisy.shape == target.shape == (49152,)
        assert np.abs(noisy).max() <= 0.999 + 1e-6 and np.abs(target).max() <= 0.999 + 1e-6
        assert -5.0 <= info["snr_db"] <= 20.0 and -35.0 <= info["level_dbfs"] <= -15.0
        assert abs(snr_db(noisy, target) - info["snr_db"]) < 0.1
        if np.abs(noisy).max() < 0.99:  # not peak-limited: the level is exact
            assert abs(rms_dbfs(noisy) - info["level_dbfs"]) < 0.05
        reverberated += info["rir"] is not None
    assert 15 <= reverberated <= 39  # about 75 % of 40


def test_reverb_target_is_reverberant_clean(corpus):
    _, lists = corpus
    mixing = MixingConfig(reverb_probability=1.0, snr_range_db=(20, 20))
    ds = TrainingMixtures(lists.clean, lists.noise, lists.rir, mixing, samples_per_epoch=4, seed=0)
    _, target, info = ds.generate(0)
    assert info["rir"] is not None
    early = TrainingMixtures(
        lists.clean,
        lists.noise,
        lists.rir,
        MixingConfig(reverb_probability=1.0, reverb_target="early"),
        4,
        seed=0,
    )
    noisy_e, target_e, info_e = early.generate(0)
    assert info_e["rir"] == info["rir"] and info_e["clean"] == info["clean"]
    assert not np.allclose(target, target_e)
    assert np.abs(noisy_e).max() <= 0.999 + 1e-6


def test_change_speed_moves_pitch_and_keeps_length():
    from fsnet.data import change_speed

    t = np.arange(32000) / 16000
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    for steps, factor in ((5, 1.1), (-5, 0.9)):
        y = change_speed(tone, steps, 16000)
        assert y.shape == (16000,) and y.dtype == np.float32
        peak_hz = np.argmax(np.abs(np.fft.rfft(y * np.hanning(16000)))) * 16000 / 16000
        assert abs(peak_hz - 500 * factor) <= 2, (steps, peak_hz)
    np.testing.assert_array_equal(change_speed(tone, 0, 100), tone[:100])
    assert change_speed(tone[:50], 5, 100)[60:].max() == 0  # too short: zero-padded


def test_speed_perturbation_in_mixtures(corpus):
    _, lists = corpus
    plain = TrainingMixtures(lists.clean, lists.noise, lists.rir, MixingConfig(), 10, seed=4)
    mixing = MixingConfig(
        clean_speed_probability=1.0, noise_speed_probability=0.5, speed_factor_range=(0.86, 1.14)
    )
    fast = TrainingMixtures(lists.clean, lists.noise, lists.rir, mixing, 10, seed=4)
    speeds = set()
    for i in range(10):
        noisy, target, info = fast.generate(i)
        assert noisy.shape == target.shape == (49152,)
        assert np.isfinite(noisy).all() and np.abs(target).max() > 0
        assert abs(snr_db(noisy, target) - info["snr_db"]) < 0.1
        assert 0.86 - 1e-9 <= info["clean_speed"] <= 1.14 + 1e-9
        speeds.add(round(info["clean_speed"], 2))
        assert plain.generate(i)[2]["clean_speed"] == 1.0  # off by default
    assert len(speeds) > 2
    # Off by default draws nothing extra: the old mixtures stay exactly what they were.
    off = MixingConfig(clean_speed_probability=0.0, speed_factor_range=(0.5, 2.0))
    same = TrainingMixtures(lists.clean, lists.noise, lists.rir, off, 10, seed=4)
    np.testing.assert_array_equal(same.generate(3)[0], plain.generate(3)[0])
    with pytest.raises(FsnetError, match="speed_factor_range"):
        MixingConfig(speed_factor_range=(1.2, 0.9))
    with pytest.raises(FsnetError, match="noise_speed_probability"):
        MixingConfig(noise_speed_probability=2)


def test_random_eq_colours_speech_and_noise_with_the_recorded_filters(corpus):
    from scipy.signal import freqz, lfilter

    from fsnet.data import random_eq

    _, lists = corpus
    base = dict(reverb_probability=0.0, snr_range_db=(5, 5))
    plain = TrainingMixtures(lists.clean, lists.noise, (), MixingConfig(**base), 6, seed=9)
    eq = MixingConfig(**base, clean_eq_probability=1.0, noise_eq_probability=1.0)
    coloured = TrainingMixtures(lists.clean, lists.noise, (), eq, 6, seed=9)
    for i in range(6):
        noisy0, target0, info0 = plain.generate(i)
        noisy1, target1, info1 = coloured.generate(i)
        assert info0["clean_eq"] is None and info0["noise_eq"] is None  # off by default
        # the colouring is drawn last: same files, SNR and level as without it
        assert (info1["clean"], info1["noise"], info1["snr_db"]) == (
            info0["clean"],
            info0["noise"],
            info0["snr_db"],
        )
        assert abs(snr_db(noisy1, target1) - info1["snr_db"]) < 0.1
        # the target is the plain target through the recorded speech filter (up to the level),
        # and the added noise the plain noise through the recorded noise filter
        for got, plain_part, (b, a) in (
            (target1, target0, info1["clean_eq"]),
            (noisy1 - target1, noisy0 - target0, info1["noise_eq"]),
        ):
            expected = lfilter(b, a, plain_part.astype(np.float64))
            gain = np.dot(got, expected) / np.dot(expected, expected)
            assert np.abs(got - gain * expected).max() < 1e-3 * np.abs(got).max()
            assert not np.allclose(
                got / np.abs(got).max(), plain_part / np.abs(plain_part).max(), atol=1e-2
            )
    # every drawn filter is stable and within +-17 dB of flat at the default limit
    rng = np.random.default_rng(0)
    for _ in range(200):
        b, a = random_eq(rng, 0.375)
        assert np.all(np.abs(np.roots(a)) < 1) and np.all(np.abs(np.roots(b)) < 1)
        gain_db = 20 * np.log10(np.abs(freqz(b, a, worN=256)[1]))
        assert np.abs(gain_db).max() <= 17.0
    with pytest.raises(FsnetError, match="eq_coefficient_limit"):
        MixingConfig(eq_coefficient_limit=0.5)
    with pytest.raises(FsnetError, match="clean_eq_probability"):
        MixingConfig(clean_eq_probability=-0.1)


def test_noise_gain_jitter_and_overlay(tmp_path):
    from fsnet.data import overlay_noise

    # noise files of constant magnitude (+-0.05 alternating), far shorter than a segment: many
    # are joined per segment, and each file's gain shows as one magnitude of the noise part
    (tmp_path / "noise").mkdir()
    rng = np.random.default_rng(3)
    noise = []
    for i in range(4):
        path = tmp_path / "noise" / f"{i}.wav"
        sf.write(path, np.resize([0.05, -0.05], 4000), 16000, subtype="FLOAT")
        noise.append(AudioEntry(str(path), 4000, 16000, 1))
    sf.write(tmp_path / "clean.wav", rng.standard_normal(60000) * 0.1, 16000)
    clean = [AudioEntry(str(tmp_path / "clean.wav"), 60000, 16000, 1)]
    base = dict(snr_range_db=(0, 0), silence_between_noises_seconds=0.0, target_level_jitter_db=0)

    def file_levels_db(noise_part: np.ndarray) -> np.ndarray:  # the distinct magnitudes, dB
        return np.unique(np.round(20 * np.log10(np.abs(noise_part.astype(np.float64))), 1))

    plain = TrainingMixtures(clean, noise, (), MixingConfig(**base), 8, seed=2)
    jitter = TrainingMixtures(
        clean, noise, (), MixingConfig(**base, noise_gain_jitter_db=6), 8, seed=2
    )
    spreads_plain, spreads_jitter = [], []
    for i in range(8):
        noisy, target, info = plain.generate(i)
        assert info["noise_overlay"] == [] and info["noise_overlay_db"] is None  # off by default
        spreads_plain.append(np.ptp(file_levels_db(noisy - target)))
        assert len(info["noise"]) >= 12
        noisy, target, _ = jitter.generate(i)
        spreads_jitter.append(np.ptp(file_levels_db(noisy - target)))
    assert max(spreads_plain) < 1.0  # one level without jitter
    assert 3.0 < np.mean(spreads_jitter) and max(spreads_jitter) <= 12.0 + 0.2  # within +-6 dB
    # overlay: drawn last, so the same files, SNR and level; the added track changes the noise
    (tmp_path / "random").mkdir()
    random_noise = []
    for i in range(4):
        path = tmp_path / "random" / f"{i}.wav"
        sf.write(path, rng.standard_normal(4000) * 0.05, 16000)
        random_noise.append(AudioEntry(str(path), 4000, 16000, 1))
    plain = TrainingMixtures(clean, random_noise, (), MixingConfig(**base), 8, seed=2)
    over = MixingConfig(
        **base, noise_overlay_probability=1.0, noise_overlay_level_range_db=(-6, -3)
    )
    overlaid = TrainingMixtures(clean, random_noise, (), over, 8, seed=2)
    for i in range(4):
        noisy0, target0, info0 = plain.generate(i)
        noisy1, target1, info1 = overlaid.generate(i)
        assert info1["noise"] == info0["noise"] and info1["snr_db"] == info0["snr_db"]
        assert info1["noise_overlay"] and -6 <= info1["noise_overlay_db"] <= -3
        assert abs(snr_db(noisy1, target1) - info1["snr_db"]) < 0.1
        assert not np.allclose(noisy1, noisy0, atol=1e-3)
    a, b = rng.standard_normal(1000), rng.standard_normal(1000) * 7
    mixed = overlay_noise(a, b, -6.0)
    added = mixed - a
    assert abs(10 * np.log10(np.mean(added**2) / np.mean(a**2)) + 6.0) < 0.01
    np.testing.assert_allclose(overlay_noise(a, np.zeros(1000), -6.0), a)
    with pytest.raises(FsnetError, match="noise_gain_jitter_db"):
        MixingConfig(noise_gain_jitter_db=-1)
    with pytest.raises(FsnetError, match="noise_overlay_level_range_db"):
        MixingConfig(noise_overlay_level_range_db=(0, -10))


def test_silence_between_noises_fixed_or_drawn_per_join(tmp_path):
    # noise files with no zero sample (+-0.05 alternating, 0.25 s): the exact-silence runs
    # inside a segment's noise are the gaps between joined files
    (tmp_path / "noise").mkdir()
    noise = []
    for i in range(3):
        path = tmp_path / "noise" / f"{i}.wav"
        sf.write(path, np.resize([0.05, -0.05], 4000), 16000, subtype="FLOAT")
        noise.append(AudioEntry(str(path), 4000, 16000, 1))
    sf.write(tmp_path / "clean.wav", np.random.default_rng(0).standard_normal(60000) * 0.1, 16000)
    clean = [AudioEntry(str(tmp_path / "clean.wav"), 60000, 16000, 1)]

    def interior_gaps(gap_seconds) -> list[int]:
        config = MixingConfig(snr_range_db=(0, 0), silence_between_noises_seconds=gap_seconds)
        mixtures = TrainingMixtures(clean, noise, (), config, 6, seed=4)
        gaps = []
        for i in range(6):
            noisy, target, _ = mixtures.generate(i)
            silent = np.abs(noisy - target) < 1e-6
            edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
            starts, ends = edges[silent[edges + 1]] + 1, edges[~silent[edges + 1]] + 1
            ends = ends[ends > starts[0]] if len(starts) else ends[:0]
            n = min(len(starts), len(ends))  # a run cut by the segment's end has no end
            gaps += [int(e - s) for s, e in zip(starts[:n], ends[:n], strict=True)]
        return gaps

    assert set(interior_gaps(0.2)) == {3200}
    drawn = interior_gaps([0.3, 1.0])
    assert len(drawn) >= 6 and min(drawn) >= 4800 and max(drawn) <= 16000
    assert len(set(drawn)) > len(drawn) // 2  # a new gap per join
    for bad in (-0.1, [0.5, 0.2], [0.1, 0.2, 0.3]):
        with pytest.raises(FsnetError, match="silence_between_noises_seconds"):
            MixingConfig(silence_between_noises_seconds=bad)
    with pytest.raises(FsnetError, match="noise_overlay_probability"):
        MixingConfig(noise_overlay_probability=1.5)


def test_noise_balance_file_or_folder(tmp_path):
    # 9 files of one noise source, 1 of another: per file the lone source is heard in ~1 of 10
    # examples, per folder in ~1 of 2.
    def entries(folder: str, count: int) -> list[AudioEntry]:
        (tmp_path / folder).mkdir(parents=True)
        rng = np.random.default_rng(count)
        for i in range(count):
            sf.write(tmp_path / folder / f"{i}.wav", rng.standard_normal(16000) * 0.1, 16000)
        return [
            AudioEntry(str(tmp_path / folder / f"{i}.wav"), 16000, 16000, 1) for i in range(count)
        ]

    clean = entries("clean", 1)
    noise = entries("noise/music", 9) + entries("noise/effects", 1)

    def effects_share(balance: str, weights: dict | None = None) -> float:
        mixing = MixingConfig(
            segment_seconds=0.25, noise_balance=balance, noise_folder_weights=weights or {}
        )
        ds = TrainingMixtures(clean, noise, (), mixing, samples_per_epoch=300, seed=1)
        picks = [ds.generate(i)[2]["noise"][0] for i in range(300)]
        return sum("/effects/" in Path(p).as_posix() for p in picks) / len(picks)

    assert effects_share("file") < 0.2
    assert 0.4 < effects_share("folder") < 0.6
    assert 0.68 < effects_share("folder", {"effects": 3}) < 0.82  # 3 of 4
    assert effects_share("folder", {"music": 0}) == 1.0
    with pytest.raises(FsnetError, match="noise_balance"):
        MixingConfig(noise_balance="source")
    with pytest.raises(FsnetError, match="needs noise_balance=folder"):
        MixingConfig(noise_folder_weights={"effects": 2})
    with pytest.raises(
        FsnetError, match="names no noise folder: efects .noise folders: effects, music"
    ):
        effects_share("folder", {"efects": 2})
    with pytest.raises(FsnetError, match="leaves no noise folder"):
        effects_share("folder", {"effects": 0, "music": 0})
    for bad in (
        {"effects": -1},
        {"effects": float("inf")},
        {"effects": float("nan")},
        {"a": "x"},
        "effects",
    ):
        with pytest.raises(FsnetError, match="finite numbers >= 0"):
            MixingConfig(noise_balance="folder", noise_folder_weights=bad)
    # a weight by name must say which folder: two folders called "effects" are refused
    noise_twice = noise + entries("more/effects", 1)
    with pytest.raises(FsnetError, match="effects names several noise folders"):
        group_noise_files(
            noise_twice, MixingConfig(noise_balance="folder", noise_folder_weights={"effects": 2})
        )
    # equal weights draw exactly as none
    plain = group_noise_files(noise, MixingConfig(noise_balance="folder"))
    assert (
        group_noise_files(
            noise, MixingConfig(noise_balance="folder", noise_folder_weights={"effects": 1})
        )[1]
        is None
    )
    assert plain[1] is None and len(plain[0]) == 2


def test_no_rirs_means_no_reverb(corpus):
    _, lists = corpus
    ds = TrainingMixtures(
        lists.clean, lists.noise, [], MixingConfig(reverb_probability=1.0), samples_per_epoch=5
    )
    assert all(ds.generate(i)[2]["rir"] is None for i in range(5))


def test_determinism_seed_epoch_index(corpus):
    _, lists = corpus

    def make(seed):
        return TrainingMixtures(lists.clean, lists.noise, lists.rir, samples_per_epoch=8, seed=seed)

    a, b, c = make(5), make(5), make(6)
    np.testing.assert_array_equal(a.generate(3)[0], b.generate(3)[0])
    assert not np.array_equal(a.generate(3)[0], a.generate(4)[0])  # other index
    assert not np.array_equal(a.generate(3)[0], c.generate(3)[0])  # other seed
    b.set_epoch(1)
    assert not np.array_equal(a.generate(3)[0], b.generate(3)[0])  # other epoch


def test_dataloader_workers_differ_and_do_not_change_the_data(corpus):
    _, lists = corpus
    ds = TrainingMixtures(lists.clean, lists.noise, lists.rir, samples_per_epoch=4, seed=9)
    serial = [n for n, _ in torch.utils.data.DataLoader(ds, batch_size=1, num_workers=0)]
    parallel = [n for n, _ in torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)]
    for x, y in zip(serial, parallel, strict=True):
        torch.testing.assert_close(x, y)
    # worker 0 gets items 0, 2; worker 1 gets 1, 3: all different
    flat = [x.flatten() for x in parallel]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))


def test_flac_ogg_and_resampling(fake_dns_tree, caplog):
    from fsnet.data import rate_notices

    tree = fake_dns_tree(
        ext="flac", noise_ext="ogg", sample_rate=22050, n_clean=2, n_noise=2, n_rir=1, n_val=1
    )
    lists = scan_corpus(tree.root, tree.rir_root)
    assert {Path(e.path).suffix for e in lists.clean} == {".flac"}
    assert {Path(e.path).suffix for e in lists.noise} == {".ogg"}
    notices = rate_notices(lists, 16000)
    assert any("22050 Hz will be resampled" in n for n in notices)
    ds = TrainingMixtures(lists.clean, lists.noise, lists.rir, samples_per_epoch=4)
    for i in range(4):
        noisy, target, info = ds.generate(i)
        assert noisy.shape == (49152,) and np.isfinite(noisy).all()
        assert abs(snr_db(noisy, target) - info["snr_db"]) < 0.1


def test_short_clean_pad_and_loop(fake_dns_tree):
    tree = fake_dns_tree(clean_seconds=1.0, n_clean=1, n_rir=0, n_val=1, subsets=("no_reverb",))
    lists = scan_corpus(tree.root)
    for mode in ("pad", "loop"):
        ds = TrainingMixtures(
            lists.clean, lists.noise, [], MixingConfig(short_clean=mode), samples_per_epoch=2
        )
        noisy, target, _ = ds.generate(0)
        assert target.shape == (49152,)
        zero = np.concatenate(([0], (target == 0).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(zero))
        longest_silence = int(np.max(edges[1::2] - edges[::2], initial=0))
        # pad: 2.072 s of zeros split around the file; loop: only the speech's own short pauses
        assert (longest_silence > 16000) if mode == "pad" else (longest_silence < 8000)


# ------------------------------------------------------------------------------------ scanning
def test_scan_writes_and_reuses_lists(fake_dns_tree):
    tree = fake_dns_tree(n_clean=3, n_noise=2, n_rir=2, n_val=2)
    lists = scan_corpus(tree.root, tree.rir_root)
    assert sorted(lists.rescanned) == ["clean", "noise", "rir", "val"]
    assert (
        len(lists.clean) == 3
        and len(lists.noise) == 2
        and len(lists.rir) == 2
        and len(lists.val) == 4
    )
    assert all(e.frames == 32000 and e.sample_rate == 16000 for e in lists.clean)
    for pair in lists.val:  # paired by fileid within the same subset
        assert Path(pair.clean).name == f"clean_fileid_{pair.fileid}.wav"
        assert Path(pair.noisy).stem.endswith(f"fileid_{pair.fileid}")
        assert Path(pair.noisy).parents[1].name == pair.subset
    assert (tree.root / "fsnet_lists" / "clean.txt").is_file()
    again = scan_corpus(tree.root, tree.rir_root)
    assert again.rescanned == [] and again.clean == lists.clean and again.val == lists.val
    assert sorted(scan_corpus(tree.root, tree.rir_root, force=True).rescanned) == [
        "clean",
        "noise",
        "rir",
        "val",
    ]


def test_missing_root_one_line(tmp_path):
    with pytest.raises(FsnetError) as err:
        scan_corpus(tmp_path / "nope")
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FsnetError, match="no dns data root"):
        scan_corpus(None)


def test_missing_subfolders_are_named(fake_dns_tree):
    tree = fake_dns_tree(n_rir=0)
    shutil.rmtree(tree.root / "noise")
    shutil.rmtree(tree.root / "test_set")
    with pytest.raises(FsnetError) as err:
        scan_corpus(tree.root, tree.root / "rirs_missing")
    msg = str(err.value)
    assert "\n" not in msg
    assert (
        "noise/" in msg
        and "test_set/synthetic" in msg
        and "rirs_missing" in msg
        and "clean/" not in msg
    )


def test_empty_folder_and_unpaired_files(fake_dns_tree, caplog):
    tree = fake_dns_tree(n_rir=0, subsets=("no_reverb",))
    for f in (tree.root / "test_set/synthetic/no_reverb/clean").iterdir():
        f.unlink()
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(FsnetError, match="no readable noisy/clean pairs"),
    ):
        scan_corpus(tree.root)
    assert "without a clean_fileid_N partner" in caplog.text


def test_bad_file_at_scan_skip_or_error(fake_dns_tree, caplog):
    tree = fake_dns_tree(n_rir=0)
    bad = tree.root / "clean" / "spk0" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    with caplog.at_level(logging.WARNING):
        lists = scan_corpus(tree.root)
    assert str(bad) in caplog.text
    assert all(e.path != str(bad) for e in lists.clean)
    with pytest.raises(FsnetError) as err:
        scan_corpus(tree.root, force=True, on_bad_file="error")
    assert str(bad) in str(err.value)


def test_bad_file_while_training_skip_or_error(fake_dns_tree, caplog):
    tree = fake_dns_tree(n_clean=2, n_rir=0)
    lists = scan_corpus(tree.root)
    broken = Path(lists.clean[0].path)
    broken.write_bytes(b"not audio any more")  # damaged after the scan
    ds = TrainingMixtures(lists.clean, lists.noise, [], samples_per_epoch=6, on_bad_file="skip")
    with caplog.at_level(logging.WARNING):
        infos = [ds.generate(i)[2] for i in range(6)]
    assert str(broken) in caplog.text
    assert all(info["clean"] != str(broken) for info in infos)

    strict = TrainingMixtures(
        lists.clean, lists.noise, [], samples_per_epoch=6, on_bad_file="error"
    )
    loader = torch.utils.data.DataLoader(strict, batch_size=1, num_workers=1)
    with pytest.raises(FsnetError) as err:
        for _ in loader:
            pass
    line = one_line(err.value)  # what the CLI prints: the worker's message, one line
    assert "\n" not in line and line.startswith(f"cannot read clean file {broken}")


# ------------------------------------------------------------------------------------ validation + module
def test_validation_pairs_and_collate(corpus):
    _, lists = corpus
    ds = ValidationPairs(lists.val)
    items = [ds[i] for i in range(len(ds))]
    assert all(item["noisy"].shape == item["clean"].shape for item in items)
    items[0]["noisy"], items[0]["clean"] = items[0]["noisy"][:1000], items[0]["clean"][:1000]
    batch = collate_validation(items[:2])
    assert batch["noisy"].shape == (2, 24000) and batch["lengths"].tolist() == [1000, 24000]
    assert float(batch["noisy"][0, 1000:].abs().sum()) == 0.0
    assert batch["names"][0].startswith("no_reverb/fileid_")


def test_unpadded_sampler_counts_each_item_once():
    data = list(range(5))
    shards = [list(UnpaddedDistributedSampler(data, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == data and [len(s) for s in shards] == [2, 2, 1]


def test_datamodule_loaders(corpus):
    tree, _ = corpus
    dm = DnsDataModule(
        str(tree.root),
        str(tree.rir_root),
        batch_size=2,
        samples_per_epoch=4,
        num_workers=0,
        val_num_workers=0,
        val_batch_size=3,
        val_max_files=3,
    )
    dm.prepare_data()
    dm.setup("fit")
    noisy, clean = next(iter(dm.train_dataloader()))
    assert noisy.shape == clean.shape == (2, 49152) and noisy.dtype == torch.float32
    assert len(dm.train_dataloader()) == 2
    batch = next(iter(dm.val_dataloader()))
    assert batch["noisy"].shape[0] == 3 and len(dm.val_set) == 3
    with pytest.raises(FsnetError, match="on_bad_file"):
        DnsDataModule(str(tree.root), on_bad_file="ignore")


# ------------------------------------------------------------------------------------ prepare script
def _prepare_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dns_prepare", Path(__file__).parents[1] / "recipes/dns/prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_prepare_script(fake_dns_tree, tmp_path, capsys):
    main = _prepare_main()
    tree = fake_dns_tree(n_rir=1)
    args = [
        "--root",
        str(tree.root),
        "--rir-root",
        str(tree.rir_root),
        "--list-dir",
        str(tmp_path / "l"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 clean files" in out and "written now: clean, noise, rir, val" in out
    assert (tmp_path / "l" / "val.txt").is_file()
    assert main(args) == 0 and "cached lists are current" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0 and "written now: clean" in capsys.readouterr().out
    assert main(["--root", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("error: dns data root")


def test_soundfile_partial_reads_are_used(corpus, monkeypatch):
    """A 3 s segment of a file must not read the whole file (start/frames passed to soundfile)."""
    _, lists = corpus
    calls = []
    real = sf.read

    def spy(path, *args, **kwargs):
        calls.append(kwargs.get("frames", -1))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sf, "read", spy)
    ds = TrainingMixtures(lists.clean, lists.noise, [], samples_per_epoch=2)
    ds.generate(0)
    assert calls and all(0 < f <= 49152 for f in calls)
