"""Hostile or careless input (issue 24): checkpoints that carry code or NaN weights, odd sample
rates, integer sample arrays, over-range and truncated audio, API misuse. Rows of
docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_MODEL_CONFIG

import fsnet
from fsnet.audio import (
    ClipCounter,
    ClippedOutputWarning,
    as_float_samples,
    load_audio,
    resample,
    write_audio,
)
from fsnet.checkpoint import read_checkpoint, save_release, to_original_state_dict
from fsnet.errors import FsnetError, check_finite_output

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file says the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_model() -> fsnet.FastFullSubNet:
    torch.manual_seed(0)
    return fsnet.build_model(TINY_MODEL_CONFIG)


def evil_checkpoints(folder: Path) -> tuple[Path, dict[str, Path]]:
    """``(marker, {name: file})``: files whose unpickling would create ``marker``."""
    marker = folder / "code-ran"
    lightning_like = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {},
        "hyper_parameters": {"model_config": TINY_MODEL_CONFIG},
        "callbacks": {"Evil": Payload(marker)},
    }
    files = {
        "issue.ckpt": {"state_dict": {}, "x": Payload(marker)},  # the reproduction
        "release.pt": {"format": "fsnet-release", "model_config": Payload(marker)},
        "last.ckpt": lightning_like,
    }
    for name, payload in files.items():
        torch.save(payload, folder / name)
    return marker, {name: folder / name for name in files}


def run_python(args: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def tiny_train(tree_root: Path, run_dir: Path) -> list[str]:
    """``train.py`` arguments of a tiny CPU run (refused before it trains, in these tests)."""
    return [
        "train.py",
        "recipe=dns",
        "model=tiny",
        "trainer=cpu",
        "data.num_workers=0",
        f"recipe.root={tree_root}",
        "recipe.rir_root=null",
        f"hydra.run.dir={run_dir}",
    ]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ------------------------------------------------------------------------- checkpoints: code
def test_a_checkpoint_that_pickles_code_is_refused_not_run(tmp_path):
    from fsnet.checkpoint import main as checkpoint_main
    from fsnet.train import resume_checkpoint
    from fsnet.train.checkpoint_io import AtomicCheckpointIO

    marker, files = evil_checkpoints(tmp_path)
    for path in files.values():
        with pytest.raises(FsnetError, match=r"refused: it holds io\.open, and loading it") as info:
            fsnet.load_model(path)
        assert "\n" not in str(info.value)
        with pytest.raises(FsnetError, match="refused"):
            resume_checkpoint(str(path), tmp_path)  # train.py resume=<path>, before Lightning
        with pytest.raises(FsnetError, match="refused"):
            AtomicCheckpointIO().load_checkpoint(path)  # what Lightning's resume itself calls
        assert checkpoint_main([str(path), str(tmp_path / "out.pt")]) == 1
        assert not marker.exists(), f"{path.name}: the checkpoint's code ran"
    # the files are live: the explicit opt-in does run them
    read_checkpoint(files["issue.ckpt"], unsafe_trust_checkpoint_code=True)
    assert marker.exists()


def test_the_three_clis_refuse_a_checkpoint_that_pickles_code(tmp_path, fake_dns_tree):
    from test_evaluate import make_dns_set  # sibling test module

    marker, files = evil_checkpoints(tmp_path)
    evil = files["issue.ckpt"]
    source = tmp_path / "in.wav"
    sf.write(source, 0.1 * np.sin(np.arange(8000) / 5.0), 16000)
    testset = make_dns_set(tmp_path / "set", n=1, seconds=0.5)
    train_args = tiny_train(fake_dns_tree(n_rir=0).root, tmp_path / "run")
    runs = {
        "stream_infer": ["stream_infer.py", "--input", source, "--output", tmp_path / "o.wav"]
        + ["--checkpoint", evil],
        "evaluate": ["evaluate.py", "progress=false", f"testset={testset}", f"checkpoint={evil}"]
        + [f"hydra.run.dir={tmp_path / 'eval'}"],
        "train init_from": [*train_args, f"init_from={evil}"],
        "train resume": [*train_args, f"resume={files['last.ckpt']}"],
    }
    for name, args in runs.items():
        proc = run_python(args)
        assert "refused: it holds io.open" in one_error_line(proc), name
        assert not marker.exists(), f"{name}: the checkpoint's code ran"


def test_checkpoints_of_the_original_trainer_with_numpy_scores_load(tmp_path):
    """The allow-list beyond plain data: the original trainer saves best_score as numpy.float64."""
    model = tiny_model()
    path = tmp_path / "best_model.tar"
    torch.save(
        {"epoch": 3, "best_score": np.float64(2.5), "model": to_original_state_dict(model)}, path
    )
    loaded = fsnet.load_model(path, look_ahead=2, shrink_size=2)
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_missing_checkpoint_entries_are_named(tmp_path):
    release = torch.load(save_release(tiny_model(), tmp_path / "r.pt"), weights_only=True)
    cases = {
        "no_config.pt": {k: v for k, v in release.items() if k != "model_config"},
        "no_weights.pt": {k: v for k, v in release.items() if k != "state_dict"},
        "lightning.ckpt": {"state_dict": {}, "hyper_parameters": {"lr": 1.0}},
    }
    for name, payload in cases.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(FsnetError) as info:
            fsnet.load_model(tmp_path / name)
        message = str(info.value)
        assert "without its 'model_config' entry" in message or "'state_dict' entry" in message
        assert name in message and "\n" not in message


# ------------------------------------------------------------------------- checkpoints: NaN
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, fake_dns_tree):
    model = tiny_model()
    name = "bottleneck.rnn.weight_hh_l0"
    with torch.no_grad():
        model.state_dict()[name][0, 1] = float("nan")
        model.state_dict()[name][2, 3] = float("inf")
    path = save_release(model, tmp_path / "nan.pt")
    with pytest.raises(FsnetError, match=rf"weight '{name}' holds 2 NaN/Inf value\(s\)"):
        fsnet.load_model(path)
    # through the CLIs (they load with load_model): one line, no output file; train.py's
    # init_from used to start and then blame the NaN loss on the learning rate
    source = tmp_path / "in.wav"
    sf.write(source, 0.1 * np.sin(np.arange(8000) / 5.0), 16000)
    stream = ["stream_infer.py", "--input", source, "--output", tmp_path / "o.wav"]
    train = tiny_train(fake_dns_tree(n_rir=0).root, tmp_path / "run")
    for args in ([*stream, "--checkpoint", path], [*train, f"init_from={path}"]):
        assert f"weight '{name}' holds 2 NaN/Inf" in one_error_line(run_python(args))
    assert not (tmp_path / "o.wav").exists()


def test_check_finite_output_and_write_audio_refuse_nan(tmp_path):
    check_finite_output(np.zeros(4, np.float32), "a.wav")
    check_finite_output(torch.zeros(4), "a.wav")
    y = np.zeros(16000, np.float32)
    y[100:103] = np.nan
    for signal in (y, torch.from_numpy(y)):
        with pytest.raises(FsnetError, match=r"for out\.wav holds 3 NaN/Inf sample\(s\) of 16000"):
            check_finite_output(signal, "out.wav")
    with pytest.raises(FsnetError, match="NaN/Inf"):
        write_audio(tmp_path / "nan.wav", y)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------- odd sample rates
RESAMPLE_PROBE = """
import json, resource, sys, time
import numpy as np
from fsnet.audio import resample

def rss_peak_mb():  # VmHWM: the peak resident set so far
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

rate = int(sys.argv[1])
x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * rate) / rate)).astype(np.float32)
resample(x[:1000], 44100, 16000)  # libraries loaded before the measurement
size = [l for l in open("/proc/self/status") if l.startswith("VmSize:")][0].split()[1]
# A guard for this machine: the old resampler wanted ~12 GB here; fail instead of swapping.
limit = int(size) * 1024 + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = rss_peak_mb()
start = time.perf_counter()
y = resample(x, rate, 16000)
print(json.dumps({"seconds": time.perf_counter() - start, "growth_mb": rss_peak_mb() - before,
                  "y": y.tolist()}))
"""


@pytest.mark.parametrize("rate", [44101, 7999])
def test_resampling_cost_does_not_depend_on_the_rates_gcd(rate):
    proc = subprocess.run(
        [sys.executable, "-c", RESAMPLE_PROBE, str(rate)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["seconds"] < 1.0 and result["growth_mb"] < 200, result
    y = np.asarray(result["y"])
    assert y.shape == (int(np.ceil(2 * rate * 16000 / rate)),)
    # the 1 kHz sine keeps its frequency and level (0.5 peak: RMS 0.3536)
    middle = y[1600:-1600]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    assert abs(np.argmax(spectrum) * 16000 / middle.size - 1000) < 2
    assert abs(np.sqrt(np.mean(middle**2)) - 0.5 / np.sqrt(2)) < 1e-3


def test_resampling_matches_the_sinc_resampler_it_replaced():
    import torchaudio

    rng = np.random.default_rng(0)
    x = np.stack([rng.standard_normal(44100), rng.standard_normal(44100)]).astype(np.float32)
    x = np.cumsum(x, axis=1) * 1e-3  # mostly low frequencies, far from the 8 kHz band edge
    new = resample(x, 44100, 16000)
    old = torchaudio.functional.resample(torch.from_numpy(x), 44100, 16000).numpy()
    assert new.shape == old.shape == (2, 16000) and new.dtype == np.float32
    inner = slice(200, -200)
    error = np.sqrt(np.mean((new[:, inner] - old[:, inner]) ** 2) / np.mean(old[:, inner] ** 2))
    assert error < 3e-3, error  # the two filters differ slightly near their band edges
    assert resample(np.zeros((2, 0), np.float32), 44100, 16000).shape == (2, 0)


# ------------------------------------------------------------------------- integer samples
def test_integer_samples_are_scaled_by_their_full_scale():
    model = tiny_model()
    rng = np.random.default_rng(0)
    ints = (rng.standard_normal(8000) * 3000).astype(np.int16)  # scipy.io.wavfile.read gives these
    floats = ints.astype(np.float32) / 32768
    expected = fsnet.enhance(model, floats)
    np.testing.assert_allclose(fsnet.enhance(model, ints), expected, atol=1e-6)
    np.testing.assert_allclose(
        fsnet.enhance(model, torch.from_numpy(ints)).numpy(), expected, atol=1e-6
    )
    engine = fsnet.StreamingEnhancer(model)
    streamed_ints = np.concatenate([engine.process(ints), engine.flush()])
    streamed = np.concatenate([engine.process(floats), engine.flush()])
    np.testing.assert_allclose(streamed_ints, streamed, atol=1e-6)
    # the other WAV widths: int32 by 2**31, 8-bit unsigned centred on 128
    np.testing.assert_allclose(as_float_samples(np.array([-(2**31), 2**30], np.int32)), [-1, 0.5])
    np.testing.assert_allclose(as_float_samples(np.array([0, 128, 192], np.uint8)), [-1, 0, 0.5])
    with pytest.raises(TypeError, match="int64"):
        fsnet.enhance(model, np.zeros(100, np.int64))


def test_api_misuse_is_named():
    model = tiny_model()
    with pytest.raises(
        TypeError, match="expected a numpy array or tensor of samples, got NoneType"
    ):
        fsnet.enhance(model, None)
    engine = fsnet.StreamingEnhancer(model)
    with pytest.raises(TypeError, match="NoneType"):
        engine.process(None)
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 256\)$"):
        engine.process(np.zeros((1, 1, 256), np.float32))


# ------------------------------------------------------------------------- over-range audio
def test_over_range_input_is_noticed_and_output_clipping_reported(tmp_path):
    t = np.arange(16000) / 16000
    loud = (23 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    x, notices = load_audio(tmp_path / "loud.wav")
    assert any("peaks at 23, above full scale" in n for n in notices), notices
    with pytest.warns(ClippedOutputWarning, match=r"out\.wav: \d+ of 16000 samples \(9\d%\)"):
        write_audio(tmp_path / "out.wav", x)
    assert np.abs(sf.read(tmp_path / "out.wav")[0]).max() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float file holds the level: nothing clipped, no warning
        write_audio(tmp_path / "out_float.wav", x, subtype="FLOAT")
    np.testing.assert_allclose(sf.read(tmp_path / "out_float.wav")[0], x, rtol=1e-6)
    # the counter the file-writing CLIs can use block by block
    clip = ClipCounter("PCM_16")
    pieces = [clip(np.array([0.5, 1.5], np.float32)), clip(np.array([-3.0], np.float32))]
    assert np.concatenate(pieces).tolist() == [0.5, 1.0, -1.0]
    assert clip.notice("o.wav").startswith("o.wav: 2 of 3 samples (67%) were beyond full scale")
    assert ClipCounter("FLOAT")(np.array([2.0], np.float32)).tolist() == [2.0]


# ------------------------------------------------------------------------- truncated audio
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_a_truncated_wav_is_noticed(tmp_path, subtype):
    x = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    sf.write(tmp_path / "full.wav", x, 16000, subtype=subtype)
    data = (tmp_path / "full.wav").read_bytes()
    header = len(data) - 32000 * {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype]
    (tmp_path / "cut.wav").write_bytes(data[: header + (len(data) - header) // 2])
    y, notices = load_audio(tmp_path / "cut.wav")
    assert y.shape == (16000,)
    assert notices == [
        "cut.wav: truncated: its header promises 2.00 s, the file holds 1.00 s (an interrupted "
        "copy?); only that part is used"
    ]
    assert load_audio(tmp_path / "full.wav")[1] == []
