"""Mask shaping (noise-suppression strength): the same bin-by-bin transform offline and streaming,
exactly nothing when off, deeper attenuation with the postfilter, a floor with atten_lim_db."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL_CONFIG, noise_like, stream_in_chunks

import fsnet
from fsnet.errors import FsnetError
from fsnet.frontend import MaskShaping, apply_mask

SHAPED = MaskShaping(postfilter=0.5, atten_lim_db=12)


def tiny_model(seed: int = 0, **overrides) -> fsnet.FastFullSubNet:
    torch.manual_seed(seed)
    return fsnet.build_model({**TINY_MODEL_CONFIG, **overrides}).eval()


def stream(model, x: np.ndarray, chunk_sizes, shaping) -> np.ndarray:
    """The engine over ``x`` in the given chunk sizes (cycled), aligned with ``x``."""
    out, latency = stream_in_chunks(model, x, chunk_sizes, shaping)
    return out[latency:]


def random_masks(seed: int, shape=(2, 257, 40)) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy spectrum and compressed masks over the whole range, with exact zeros among them."""
    g = torch.Generator().manual_seed(seed)
    noisy = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    compressed = (torch.rand((shape[0], 2, *shape[1:]), generator=g) * 2 - 1) * 10
    compressed[..., :3] = 0  # a mask of 0: silenced bins
    compressed[..., 3:6] *= 0.01  # small gains
    return noisy, compressed


# ---------------------------------------------------------------------------- offline == stream
@pytest.mark.parametrize("look_ahead", [0, 2])
def test_streaming_equals_offline_with_shaping(look_ahead):
    model = tiny_model(look_ahead=look_ahead)
    rng = np.random.default_rng(look_ahead)
    x = rng.uniform(-1, 1, 4000 + 123).astype(np.float32)
    offline = fsnet.enhance(model, x, chunk_seconds=None, shaping=SHAPED)  # whole-signal forward
    assert np.abs(offline - fsnet.enhance(model, x)).max() > 1e-3  # the shaping does something
    chunked = fsnet.enhance(model, x, chunk_seconds=0.1, shaping=SHAPED)  # through the engine
    assert np.abs(chunked - offline).max() <= 1e-5
    for sizes in ([7], [256], [1000], list(rng.integers(1, 900, size=20))):
        assert np.abs(stream(model, x, sizes, SHAPED) - offline).max() <= 1e-5, sizes


def test_shaping_off_is_bit_identical_to_none():
    model = tiny_model()
    x = np.random.default_rng(1).uniform(-1, 1, 5000).astype(np.float32)
    for chunk_seconds in (None, 0.1):
        plain = fsnet.enhance(model, x, chunk_seconds=chunk_seconds)
        for off in (MaskShaping(), MaskShaping(postfilter=0, atten_lim_db=None)):
            assert not off.active
            shaped = fsnet.enhance(model, x, chunk_seconds=chunk_seconds, shaping=off)
            np.testing.assert_array_equal(shaped, plain)
    np.testing.assert_array_equal(
        stream(model, x, [333], MaskShaping()), stream(model, x, [333], None)
    )
    noisy, compressed = random_masks(0)
    assert torch.equal(apply_mask(noisy, compressed, MaskShaping()), apply_mask(noisy, compressed))


# --------------------------------------------------------------------------------- the postfilter
def test_postfilter_is_the_documented_formula_and_keeps_unit_gains():
    noisy, compressed = random_masks(2)
    plain = apply_mask(noisy, compressed)
    shaped = apply_mask(noisy, compressed, MaskShaping(postfilter=0.5))
    mask = plain / noisy
    expected = noisy * (mask * mask.abs().clamp(max=1) ** 0.5)
    torch.testing.assert_close(shaped, expected, rtol=1e-5, atol=1e-6)
    ratio = shaped.abs() / plain.abs().clamp(min=1e-12)
    assert (ratio <= 1 + 1e-6).all()  # never louder than unshaped
    gains_of_one_or_more = mask.abs() >= 1
    assert gains_of_one_or_more.any()
    assert torch.equal(shaped[gains_of_one_or_more], plain[gains_of_one_or_more])


def test_postfilter_lowers_the_output_energy_on_noise():
    model = tiny_model(seed=3)
    x = noise_like(np.random.default_rng(3), 2.0)

    def energy_db(y: np.ndarray) -> float:
        return 10 * math.log10(float(np.mean(y.astype(np.float64) ** 2)))

    plain = energy_db(fsnet.enhance(model, x))
    mild = energy_db(fsnet.enhance(model, x, shaping=MaskShaping(postfilter=0.3)))
    strong = energy_db(fsnet.enhance(model, x, shaping=MaskShaping(postfilter=1.0)))
    assert strong < mild - 0.5 < plain - 1.0, (plain, mild, strong)


# ------------------------------------------------------------------------ the attenuation limit
@pytest.mark.parametrize("postfilter", [0.0, 0.5])
@pytest.mark.parametrize("atten_lim_db", [6.0, 12.0, 40.0])
def test_atten_lim_bounds_the_attenuation_of_every_bin(postfilter, atten_lim_db):
    noisy, compressed = random_masks(4)
    shaping = MaskShaping(postfilter=postfilter, atten_lim_db=atten_lim_db)
    out = apply_mask(noisy, compressed, shaping)
    limit = 10 ** (-atten_lim_db / 20)
    ratio = out.abs() / noisy.abs()
    assert ratio.min() >= limit * (1 - 1e-5), (float(ratio.min()), limit)
    assert ratio.min() <= limit * (1 + 1e-5)  # the floor is reached, not overshot
    # Bins above the floor are the postfilter's alone; the others are the noisy bin turned down.
    unlimited = apply_mask(noisy, compressed, MaskShaping(postfilter=postfilter))
    above = unlimited.abs() / noisy.abs() >= limit * (1 + 1e-5)
    assert torch.equal(out[above], unlimited[above])
    below = unlimited.abs() / noisy.abs() < limit * (1 - 1e-5)
    assert below.any() and (unlimited[below] == 0).any()
    torch.testing.assert_close(out[below], noisy[below] * limit)


def test_atten_lim_in_the_stream_keeps_the_output_above_the_floor_on_noise():
    model = tiny_model(seed=5)
    x = noise_like(np.random.default_rng(5), 1.0)
    strong = MaskShaping(postfilter=4.0)  # drives the tiny model's output far down
    floored = MaskShaping(postfilter=4.0, atten_lim_db=10.0)

    def level_db(y):
        return 10 * math.log10(float(np.mean(np.asarray(y, np.float64) ** 2)))

    noisy_db = level_db(x)
    assert level_db(stream(model, x, [256], strong)) < noisy_db - 20
    assert level_db(stream(model, x, [256], floored)) > noisy_db - 10 - 0.5


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"postfilter": -0.1}, "postfilter must be a finite number >= 0"),
        ({"postfilter": math.nan}, "postfilter must be"),
        ({"postfilter": math.inf}, "postfilter must be"),
        ({"postfilter": "strong"}, "postfilter must be"),
        ({"postfilter": True}, "postfilter must be"),
        ({"atten_lim_db": 0}, "atten_lim_db must be a finite number of dB > 0"),
        ({"atten_lim_db": -6}, "atten_lim_db must be"),
        ({"atten_lim_db": math.nan}, "atten_lim_db must be"),
        ({"atten_lim_db": math.inf}, "atten_lim_db must be"),
        ({"atten_lim_db": "none"}, "atten_lim_db must be"),
    ],
)
def test_invalid_values_raise_one_line(kwargs, message):
    with pytest.raises(FsnetError, match=f"^{message}") as caught:
        MaskShaping(**kwargs)
    assert "\n" not in str(caught.value)


def test_values_become_floats_and_names_follow_the_caller():
    shaping = MaskShaping(postfilter=1, atten_lim_db=np.float32(12))
    assert type(shaping.postfilter) is float and type(shaping.atten_lim_db) is float
    assert shaping.describe() == "postfilter 1, attenuation limit 12 dB"
    assert MaskShaping().describe() == "no mask shaping"
    assert fsnet.MaskShaping is MaskShaping
    with pytest.raises(FsnetError, match="^--postfilter must be .*; --atten-lim-db must be"):
        MaskShaping.checked(-1.0, 0.0, names=("--postfilter", "--atten-lim-db"))
    with pytest.raises(AttributeError):
        shaping.postfilter = 0.0  # frozen
    engine = fsnet.StreamingEnhancer(tiny_model(), shaping=shaping)
    assert engine.shaping is shaping
    with pytest.raises(AttributeError):
        engine.shaping = MaskShaping()  # a CUDA graph may already have captured it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_engine_shapes_the_mask_as_offline():
    """The shaping ops are captured in the hop's CUDA graph (GPU: pytest -k cuda_graph)."""
    model = tiny_model(seed=6).cuda()
    x = np.random.default_rng(6).uniform(-1, 1, 6000).astype(np.float32)
    offline = fsnet.enhance(model, x, chunk_seconds=None, shaping=SHAPED)
    for cuda_graphs in (False, True):
        engine = fsnet.StreamingEnhancer(model, cuda_graphs=cuda_graphs, shaping=SHAPED)
        streamed = np.concatenate([engine.process(x[i : i + 256]) for i in range(0, 6000, 256)])
        streamed = np.concatenate([streamed, engine.flush()])[engine.latency_samples :]
        assert np.abs(streamed - offline).max() <= 1e-4, cuda_graphs
    assert np.abs(offline - fsnet.enhance(model, x, chunk_seconds=None)).max() > 1e-3
