"""Mixing on the training device (fsnet.data.batch_mixing) against the loader's CPU mixing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from fsnet.data import DnsDataModule, MixingConfig, TrainingMixtures, scan_corpus
from fsnet.data.batch_mixing import (
    collate_components,
    colour,
    components_item,
    eq_tail_taps,
    is_components,
    mix_batch,
)
from fsnet.errors import FsnetError

# every augmentation on, often: each code path of the mixer is taken in a dozen examples
BUSY = dict(
    clean_speed_probability=0.5,
    noise_speed_probability=0.5,
    clean_eq_probability=0.6,
    noise_eq_probability=0.6,
    noise_gain_jitter_db=6.0,
    noise_overlay_probability=0.5,
    silence_between_noises_seconds=[0.1, 0.4],
)
CONFIGS = {
    "default": {},
    "dry": {"reverb_probability": 0.0, "clean_eq_probability": 0.5},
    "early": {"reverb_target": "early"},
    "busy": BUSY,
    "busy_early": {**BUSY, "reverb_target": "early", "reverb_probability": 0.5},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from conftest import make_fake_dns_tree

    tree = make_fake_dns_tree(
        tmp_path_factory.mktemp("batchmix") / "dns", clean_seconds=4.0, n_noise=4, n_rir=3
    )
    return tree, scan_corpus(tree.root, tree.rir_root)


def dataset(corpus, seed: int = 3, **mixing) -> TrainingMixtures:
    lists = corpus[1]
    return TrainingMixtures(
        lists.clean, lists.noise, lists.rir, MixingConfig(**mixing), samples_per_epoch=64, seed=seed
    )


def batch_mix(ds: TrainingMixtures, indices) -> tuple[torch.Tensor, torch.Tensor]:
    batch = collate_components([components_item(ds.draw(i)[0]) for i in indices])
    assert is_components(batch)
    return mix_batch(batch, ds.mixing)


def cpu_mix(ds: TrainingMixtures, indices) -> tuple[np.ndarray, np.ndarray]:
    pairs = [ds.generate(i)[:2] for i in indices]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def relative_error(got: torch.Tensor, expected: np.ndarray) -> np.ndarray:
    """Largest difference of each example, relative to its peak."""
    return np.abs(got.numpy() - expected).max(axis=1) / np.abs(expected).max(axis=1)


@pytest.mark.parametrize("name", CONFIGS)
def test_each_example_matches_the_cpu_path(corpus, name):
    ds = dataset(corpus, **CONFIGS[name])
    noisy, target = batch_mix(ds, range(16))
    noisy_cpu, target_cpu = cpu_mix(ds, range(16))
    assert noisy.dtype == target.dtype == torch.float32 and noisy.shape == (16, 49152)
    assert relative_error(noisy, noisy_cpu).max() < 1e-5
    assert relative_error(target, target_cpu).max() < 1e-5
    infos = [ds.draw(i)[1] for i in range(16)]
    if name.startswith("busy"):  # the paths were taken
        assert any(i["rir"] for i in infos) and any(i["clean_eq"] for i in infos)
        assert any(i["noise_eq"] for i in infos) and any(i["noise_overlay"] for i in infos)
        assert any(i["rir"] is None for i in infos)


def test_distribution_statistics_agree(corpus):
    """SNR, level and peak of 64 busy mixtures: the same statistics from both paths."""
    ds = dataset(corpus, **BUSY, reverb_target="early")
    noisy, target = (t.numpy().astype(np.float64) for t in batch_mix(ds, range(64)))
    noisy_cpu, target_cpu = (x.astype(np.float64) for x in cpu_mix(ds, range(64)))

    def stats(noisy, target):
        # the early target is not the mixed speech, so measure the level, and SNR where it is exact
        level = 10 * np.log10(np.mean(noisy**2, axis=1))
        peak = np.abs(noisy).max(axis=1)
        return np.array([level.mean(), level.std(), peak.mean(), peak.max()])

    np.testing.assert_allclose(stats(noisy, target), stats(noisy_cpu, target_cpu), atol=1e-4)
    plain = dataset(corpus)  # reverberant target: the SNR is exact
    noisy, target = (t.numpy().astype(np.float64) for t in batch_mix(plain, range(64)))
    snr = 10 * np.log10(np.sum(target**2, 1) / np.sum((noisy - target) ** 2, 1))
    wanted = np.array([plain.draw(i)[1]["snr_db"] for i in range(64)])
    assert np.abs(snr - wanted).max() < 1e-3 and -5 <= snr.min() and snr.max() <= 20
    assert 0 < snr.std() and abs(snr.mean() - 7.5) < 3  # uniform in [-5, 20]


def test_fixed_seeds_give_the_same_mixtures(corpus):
    a = batch_mix(dataset(corpus, seed=5, **BUSY), range(8))
    b = batch_mix(dataset(corpus, seed=5, **BUSY), range(8))
    c = batch_mix(dataset(corpus, seed=6, **BUSY), range(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("limit", [0.375, 0.49])
def test_colour_matches_lfilter_within_the_bound(limit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4000)).astype(np.float32)
    # the slowest-decaying corners (a real pole near -r) and random filters
    corners = [[limit, -limit, limit, -limit], [-limit, limit, -limit, -limit]]
    coefficients = np.array(corners + rng.uniform(-limit, limit, (4, 4)).tolist())
    got = colour(torch.from_numpy(x), torch.from_numpy(coefficients), limit).numpy()
    expected = np.stack(
        [
            lfilter([1, b1, b2], [1, a1, a2], row.astype(np.float64))
            for row, (b1, b2, a1, a2) in zip(x, coefficients, strict=True)
        ]
    )
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


def test_eq_tail_bound_holds():
    """The impulse response of the slowest filter sums to less than the tolerance past K taps."""
    for limit in (0.2, 0.375, 0.45):
        taps = eq_tail_taps(limit)
        impulse = np.zeros(taps * 8)
        impulse[0] = 1.0
        h = lfilter([1, limit, limit], [1, limit, -limit], impulse)
        assert np.abs(h[taps:]).sum() < 1e-8 and np.abs(h[: taps // 4]).sum() > 1
    assert eq_tail_taps(0.375) == 192 and eq_tail_taps(0.0) == 64


def test_fft_sizes_are_smooth_and_large_enough():
    from fsnet.data.batch_mixing import _fft_size

    for n in [1, 2, 7, 49152, 49344, 65537, *range(49000, 49400, 7)]:
        size = _fft_size(n)
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        assert size >= n and rest == 1 and size < 1.25 * n + 2
    assert _fft_size(49152 + 192) == 50000 and _fft_size(49152) == 49152


def test_datamodule_mix_on(corpus):
    tree, _ = corpus

    def module(mix_on: str, workers: int = 0) -> DnsDataModule:
        return DnsDataModule(
            str(tree.root), batch_size=4, samples_per_epoch=8, num_workers=workers, mix_on=mix_on
        )

    with pytest.raises(FsnetError, match="data.mix_on must be one of auto, loader, device"):
        module("gpu")
    auto = module("auto")
    assert not auto.mixes_on_device()  # no trainer: the loader mixes
    for device, on_device in (("cpu", False), ("cuda", True)):
        auto.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert auto.mixes_on_device() is on_device
    loader_batch = next(iter(module("loader").train_dataloader()))
    on_device = module("device", workers=1)  # collated in shared memory by a worker process
    components = next(iter(on_device.train_dataloader()))
    assert is_components(components)
    noisy, target = on_device.on_after_batch_transfer(components, 0)
    torch.testing.assert_close(noisy, loader_batch[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(target, loader_batch[1], rtol=0, atol=1e-6)
    # validation batches pass through untouched
    val = {"noisy": torch.zeros(1, 4), "clean": torch.zeros(1, 4), "lengths": torch.tensor([4])}
    assert on_device.on_after_batch_transfer(val, 0) is val


def test_tiny_cpu_training_mixes_on_the_device(corpus, tiny_model_config):
    from test_train import pl, quiet_trainer

    from fsnet.system import EnhancementSystem

    tree, _ = corpus
    dm = DnsDataModule(
        str(tree.root),
        batch_size=2,
        samples_per_epoch=4,
        num_workers=0,
        val_num_workers=0,
        mix_on="device",
        mixing={"clean_eq_probability": 0.5, "noise_overlay_probability": 0.5},
    )
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch)

    system = EnhancementSystem(tiny_model_config, metric_workers=0, metrics=[])
    quiet_trainer(max_epochs=1, limit_val_batches=0, callbacks=[Spy()]).fit(system, datamodule=dm)
    assert len(seen) == 2
    for noisy, target in seen:  # the training step got (noisy, target) mixtures
        assert noisy.shape == target.shape == (2, 49152) and torch.isfinite(noisy).all()
        assert float(noisy.abs().max()) <= 0.999 + 1e-6
    expected = torch.stack(
        [torch.from_numpy(dm.train_set.generate(i, epoch=0)[0]) for i in range(2)]
    )
    torch.testing.assert_close(seen[0][0], expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixing_matches_cpu(corpus):
    ds = dataset(corpus, **BUSY, reverb_target="early")
    batch = collate_components([components_item(ds.draw(i)[0]) for i in range(16)])
    cpu = mix_batch(batch, ds.mixing)
    gpu = mix_batch({k: v.cuda() for k, v in batch.items()}, ds.mixing)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-6)


def test_config_option_reaches_the_data_module(tmp_path):
    from hydra.utils import instantiate
    from test_train_config import compose_cfg

    cfg = compose_cfg(["data.mix_on=device", f"recipe.root={tmp_path}"], tmp_path)
    assert instantiate(cfg.data).mix_on == "device"
    assert compose_cfg([], tmp_path).data.mix_on == "auto"
