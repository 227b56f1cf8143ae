"""Core promises: one front end, an exact causal norm, and streaming == offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from conftest import TINY_MODEL_CONFIG, stream_in_chunks

import fsnet
from fsnet.checkpoint import save_release, to_original_state_dict
from fsnet.frontend import STFT, apply_mask, build_cirm
from fsnet.norm import cumulative_laplace_norm

TINY = {**TINY_MODEL_CONFIG, "bottleneck_num_layers": 2}  # a stacked sub-band LSTM


def tiny_model(seed: int = 0, **overrides) -> fsnet.FastFullSubNet:
    torch.manual_seed(seed)
    return fsnet.build_model({**TINY, **overrides}).eval()


# ------------------------------------------------------------------------------------ front end
def test_stft_matches_torch_stft_and_inverts():
    rng = np.random.default_rng(0)
    wave = torch.from_numpy(rng.uniform(-1, 1, (2, 4001)).astype(np.float32))
    stft = STFT(512, 256)
    ours = stft.stft(wave)
    # With hop = n_fft / 2 our left padding equals torch's centring with zero padding.
    ref = torch.stft(
        wave,
        512,
        256,
        window=torch.hann_window(512),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    frames = ref.shape[-1]
    torch.testing.assert_close(ours[..., :frames], ref, atol=1e-4, rtol=1e-5)
    back = stft.istft(ours, wave.shape[-1])
    assert back.shape == wave.shape
    assert (back - wave).abs().max() < 1e-5


@pytest.mark.parametrize("n_fft,hop", [(512, 256), (512, 128), (256, 64)])
def test_istft_inverts_for_other_hops(n_fft, hop):
    wave = torch.randn(1, 3333) * 0.3
    stft = STFT(n_fft, hop)
    assert (stft.istft(stft.stft(wave), 3333) - wave).abs().max() < 1e-5


def test_mel_features_match_torchaudio_and_librosa():
    import librosa

    model = tiny_model(num_mels=64)
    mag = torch.rand(2, 257, 30) * 10
    ours = model.to_mel(mag)
    ref = torchaudio.transforms.MelScale(
        n_mels=64, sample_rate=16000, f_min=0, f_max=8000, n_stft=257
    )(mag)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=0, fmax=8000, htk=True, norm=None)
    lib = np.einsum("mf,bft->bmt", fb, mag.numpy())
    np.testing.assert_allclose(ours.numpy(), lib, atol=1e-5 * 10, rtol=1e-4)


def test_front_end_buffers_follow_the_model():
    model = tiny_model()
    names = {name for name, _ in model.named_buffers()}
    assert {"mel_fb", "stft.window", "stft.ola_envelope"} <= names
    assert "mel_fb" not in model.state_dict()  # rebuilt from the config, never stale


def test_cirm_target_reconstructs_clean():
    noisy = torch.randn(1, 257, 20, dtype=torch.complex64)
    clean = noisy * torch.complex(torch.rand(257, 20) * 2, torch.rand(257, 20) - 0.5)
    rebuilt = apply_mask(noisy, build_cirm(noisy, clean))
    torch.testing.assert_close(rebuilt, clean, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------ norm
def test_norm_whole_sequence_equals_framewise():
    x = torch.rand(3, 12, 50) * 5
    whole, _ = cumulative_laplace_norm(x)
    state, parts = None, []
    for sizes in (1, 7, 1, 20, 21):
        chunk, x = x[..., :sizes], x[..., sizes:]
        y, state = cumulative_laplace_norm(chunk, state)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, -1), whole, atol=0, rtol=1e-6)


def test_norm_stays_exact_over_one_hour():
    frames = 3600 * 16000 // 256  # one hour of 16 ms hops
    rng = np.random.default_rng(1)
    # Loud start then a long quiet stretch: where float32 running sums lose the small terms.
    x64 = np.exp(rng.normal(0, 2, size=(1, 8, frames))) * np.linspace(100, 0.01, frames)
    x = torch.from_numpy(x64.astype(np.float32))
    ref = x.numpy().astype(np.float64)
    ref_mean = np.cumsum(ref.sum(1), -1) / (np.arange(1, frames + 1) * 8)
    expected = ref / (ref_mean[:, None, :] + 1.1920928955078125e-07)

    whole, _ = cumulative_laplace_norm(x)
    np.testing.assert_allclose(whole.numpy(), expected, rtol=1e-5)
    # Frame-wise with carried state, in uneven chunks: the last minutes must still agree.
    state, last = None, None
    for start in range(0, frames, 9973):
        last, state = cumulative_laplace_norm(x[..., start : start + 9973], state)
    tail = expected[..., -last.shape[-1] :]
    np.testing.assert_allclose(last.numpy(), tail, rtol=1e-5)


def test_norm_of_digital_silence_is_finite():
    y, state = cumulative_laplace_norm(torch.zeros(2, 4, 10))
    assert torch.isfinite(y).all() and (y == 0).all()
    y2, _ = cumulative_laplace_norm(torch.zeros(2, 4, 1), state)
    assert torch.isfinite(y2).all()


# ------------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("look_ahead", [0, 2])
@pytest.mark.parametrize("shrink_size", [1, 2, 3])
def test_streaming_equals_offline(look_ahead, shrink_size):
    model = tiny_model(look_ahead=look_ahead, shrink_size=shrink_size)
    rng = np.random.default_rng(look_ahead * 10 + shrink_size)
    x = rng.uniform(-1, 1, 8000 + 123).astype(np.float32)
    offline = fsnet.enhance(model, x, chunk_seconds=None)  # the whole-signal forward
    assert offline.shape == x.shape
    random_sizes = list(rng.integers(1, 900, size=50))
    for sizes in ([7], [256], [1000], random_sizes):
        out, latency = stream_in_chunks(model, x, sizes)
        assert latency == (512 - 256) + look_ahead * 256
        assert len(out) == len(x) + latency
        assert np.abs(out[:latency]).max() == 0
        assert np.abs(out[latency:] - offline).max() <= 1e-5, sizes


def test_streaming_one_sample_at_a_time():
    model = tiny_model()
    x = np.random.default_rng(3).uniform(-1, 1, 2000).astype(np.float32)
    out, latency = stream_in_chunks(model, x, [1])
    assert np.abs(out[latency:] - fsnet.enhance(model, x, chunk_seconds=None)).max() <= 1e-5


def test_streaming_gru_and_paper_size():
    for model in (tiny_model(rnn_type="GRU"), fsnet.build_model().eval()):
        x = np.random.default_rng(4).uniform(-1, 1, 5000).astype(np.float32)
        out, latency = stream_in_chunks(model, x, [333])
        assert np.abs(out[latency:] - fsnet.enhance(model, x, chunk_seconds=None)).max() <= 1e-5


def test_output_ready_count_and_short_inputs():
    model = tiny_model()
    engine = fsnet.StreamingEnhancer(model)
    assert len(engine.process(np.zeros(255, np.float32))) == 0
    assert len(engine.process(np.zeros(1, np.float32))) == 256
    assert len(engine.process(np.zeros(600, np.float32))) == 512
    for n in (1, 100, 511):  # shorter than one frame
        x = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
        out, latency = stream_in_chunks(model, x, [n])
        np.testing.assert_allclose(out[latency:], fsnet.enhance(model, x), atol=1e-5)
    assert len(fsnet.enhance(model, np.zeros(0, np.float32))) == 0


def test_causality():
    model = tiny_model()
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 6000).astype(np.float32)
    cut = 3001
    x2 = x.copy()
    x2[cut:] = rng.uniform(-1, 1, len(x) - cut)
    a, b = fsnet.StreamingEnhancer(model), fsnet.StreamingEnhancer(model)
    emitted_a = np.concatenate([a.process(x[:1000]), a.process(x[1000:cut])])
    emitted_b = np.concatenate([b.process(x2[:1000]), b.process(x2[1000:cut])])
    assert len(emitted_a) > 0
    np.testing.assert_array_equal(emitted_a, emitted_b)
    # Offline: sample m depends on input up to m + latency only.
    latency = a.latency_samples
    ya, yb = fsnet.enhance(model, x), fsnet.enhance(model, x2)
    np.testing.assert_allclose(ya[: cut - latency], yb[: cut - latency], atol=1e-6)
    assert np.abs(ya[cut:] - yb[cut:]).max() > 1e-3  # and the change does matter later


def test_batched_streams_equal_single_streams():
    model = tiny_model()
    rng = np.random.default_rng(6)
    xs = rng.uniform(-1, 1, (3, 4000)).astype(np.float32)
    xs[1] *= 0.01  # streams differ in level: state must not leak between them
    engine = fsnet.StreamingEnhancer(model, num_streams=3)
    batched = np.concatenate(
        [engine.process(xs[:, i : i + 500]) for i in range(0, 4000, 500)] + [engine.flush()], axis=1
    )
    for b in range(3):
        single, _ = stream_in_chunks(model, xs[b], [500])
        np.testing.assert_allclose(batched[b], single, atol=1e-6)


def test_reset_starts_a_fresh_stream():
    model = tiny_model()
    x = np.random.default_rng(7).uniform(-1, 1, 3000).astype(np.float32)
    engine = fsnet.StreamingEnhancer(model)
    first = np.concatenate([engine.process(x), engine.flush()])
    engine.process(x[:777])
    engine.reset()
    second = np.concatenate([engine.process(x), engine.flush()])
    np.testing.assert_array_equal(first, second)


def test_non_finite_input_is_refused_and_zeroed_live():
    from fsnet.live.engine import ModelEngine

    model = tiny_model()
    x = np.random.default_rng(8).uniform(-1, 1, 3000).astype(np.float32)
    bad = x.copy()
    bad[1000] = np.nan
    bad[2000] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fsnet.enhance(model, bad)
    # the engine refuses the chunk before any state moves: the stream goes on as if it never came
    engine = fsnet.StreamingEnhancer(model)
    out = [engine.process(x[:1500])]
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine.process(bad[1500:])
    out += [engine.process(x[1500:]), engine.flush()]
    np.testing.assert_array_equal(np.concatenate(out), stream_in_chunks(model, x, [1500])[0])
    # live: the faulty samples are played as silence and counted, the output stays finite
    live = ModelEngine(model)
    y = np.concatenate([live.process(bad[i : i + 256]) for i in range(0, 3000, 256)])
    zeroed = np.where(np.isfinite(bad), bad, 0.0).astype(np.float32)
    reference = ModelEngine(model)
    expected = np.concatenate([reference.process(zeroed[i : i + 256]) for i in range(0, 3000, 256)])
    assert np.isfinite(y).all() and live.nonfinite_samples == 2
    np.testing.assert_array_equal(y, expected)


# ------------------------------------------------------------------------------------ checkpoints
def test_release_round_trip(tmp_path):
    model = tiny_model(look_ahead=1, shrink_size=3)
    path = save_release(model, tmp_path / "m.pt")
    loaded = fsnet.load_model(path)
    assert loaded.config == model.config and not loaded.training
    x = np.random.default_rng(8).uniform(-1, 1, 3000).astype(np.float32)
    np.testing.assert_array_equal(fsnet.enhance(model, x), fsnet.enhance(loaded, x))
    half = fsnet.load_model(save_release(model, tmp_path / "h.pt", half=True))
    np.testing.assert_allclose(fsnet.enhance(half, x), fsnet.enhance(model, x), atol=2e-2)
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["model_config"]["look_ahead"] == 1


def test_original_checkpoint_converter_round_trip(tmp_path):
    torch.manual_seed(9)
    model = fsnet.build_model().eval()  # the official layout is the paper size
    original = {"module." + k: v for k, v in to_original_state_dict(model).items()}
    assert "decoder_lstm.1.fc_output_layer.weight" in to_original_state_dict(model)
    torch.save({"epoch": 3, "model": original}, tmp_path / "latest_model.tar")
    loaded = fsnet.load_model(tmp_path / "latest_model.tar")
    assert loaded.config == model.config
    x = np.random.default_rng(9).uniform(-1, 1, 3000).astype(np.float32)
    np.testing.assert_array_equal(fsnet.enhance(model, x), fsnet.enhance(loaded, x))
    torch.save(to_original_state_dict(model), tmp_path / "best_model.tar")  # a bare state dict
    assert fsnet.load_model(tmp_path / "best_model.tar", look_ahead=1).config.look_ahead == 1


def test_bad_checkpoints_raise_one_clear_error(tmp_path):
    model = tiny_model()
    good = save_release(model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    wrong = tmp_path / "wrong.pt"
    payload = torch.load(good, weights_only=True)
    payload["model_config"]["num_mels"] = 20
    torch.save(payload, wrong)
    for path in (truncated, garbage, wrong, tmp_path / "missing.pt"):
        with pytest.raises(fsnet.FsnetError) as info:
            fsnet.load_model(path)
        assert "\n" not in str(info.value)


def test_overrides_cannot_change_a_trained_config(tmp_path, capsys):
    """look_ahead/shrink_size overrides are for original checkpoints; a release keeps its config."""
    from fsnet.checkpoint import main as checkpoint_main

    release = save_release(tiny_model(look_ahead=1), tmp_path / "m.pt")
    assert fsnet.load_model(release, look_ahead=1).config.look_ahead == 1  # repeating it is fine
    with pytest.raises(fsnet.FsnetError, match="trained with look_ahead=1, not 0"):
        fsnet.load_model(release, look_ahead=0)
    assert checkpoint_main([str(release), str(tmp_path / "out.pt"), "--look-ahead", "0"]) == 1
    assert not (tmp_path / "out.pt").exists()
    # a bad destination or a directory as source: one line, no traceback
    assert checkpoint_main([str(release), str(tmp_path)]) == 1
    assert checkpoint_main([str(tmp_path), str(tmp_path / "x.pt")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
    assert "is a directory" in errors[1] and "is a directory" in errors[2]


def test_config_rejects_typos():
    with pytest.raises(fsnet.FsnetError, match="num_mel"):
        fsnet.build_model({"num_mel": 32})
    with pytest.raises(fsnet.FsnetError, match=r"unknown model config key\(s\) \['lookahead'\]"):
        fsnet.load_model(lookahead=5)
    with pytest.raises(fsnet.FsnetError, match="cannot use device 'foo'"):
        fsnet.load_model(device="foo")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"hop_samples": 0}, "hop_samples must be >= 1"),
        ({"n_fft": "abc"}, "n_fft must be a whole number, got 'abc'"),
        ({"look_ahead": 1.5}, "look_ahead must be a whole number"),
        ({"encoder_hidden_sizes": 5}, "encoder_hidden_sizes must be a list of whole numbers"),
        ({"norm_eps": "x"}, "norm_eps must be a finite number"),
    ],
)
def test_config_rejects_wrong_types_in_one_line(values, message):
    # command-line values arrive as text or the wrong type: one FsnetError, not an arithmetic error
    with pytest.raises(fsnet.FsnetError, match=message):
        fsnet.build_model(values)
    assert fsnet.build_model({**TINY, "n_fft": "512", "look_ahead": 2.0}).config.n_fft == 512
