"""ONNX export of the hop: the state travels explicitly, and ONNX Runtime streams exactly what
the PyTorch engine streams, frame by frame, across sub-band and plain hops."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
import torch

import fsnet
from fsnet.checkpoint import save_release
from fsnet.onnx_export import (
    GRAPH_FILES,
    OnnxHop,
    OnnxStreamingEnhancer,
    export_onnx,
    flatten_state,
    main,
    state_names,
)

# Two layers everywhere, so that per-layer state names and [L, rows, H] sub-band state are used.
TINY = dict(
    num_mels=16,
    encoder_hidden_sizes=(24, 20),
    bottleneck_hidden_size=16,
    bottleneck_num_layers=2,
    decoder_hidden_sizes=(24, 24),
    noisy_num_neighbors=2,
    shrink_size=3,  # blocks of 3: plain hops outnumber sub-band hops and frame 0 is special
)
RATE = 16000


@pytest.fixture(scope="module")
def tiny_model() -> fsnet.FastFullSubNet:
    torch.manual_seed(0)
    return fsnet.build_model(TINY).eval()


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """The CLI's export of a tiny release file (fp32 and int8 graphs) and what it printed."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = save_release(tiny_model, root / "tiny.pt")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([str(checkpoint), str(root / "graphs"), "--int8"])
    assert code == 0
    return root / "graphs", stdout.getvalue()


def noise(seconds: float, seed: int = 0, streams: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (int(seconds * RATE),) if streams is None else (streams, int(seconds * RATE))
    # A level that changes over time, so the cumulative norm's running state matters.
    level = 0.02 + 0.2 * np.abs(np.sin(np.linspace(0, 7, shape[-1])))
    return (level * rng.standard_normal(shape)).astype(np.float32)


def run_engine(engine, x: np.ndarray, chunk_sizes) -> np.ndarray:
    outs, i, k = [], 0, 0
    while i < x.shape[-1]:
        n = chunk_sizes[k % len(chunk_sizes)]
        outs.append(engine.process(x[..., i : i + n]))
        i, k = i + n, k + 1
    outs.append(engine.flush())
    return np.concatenate(outs, axis=-1)


# ------------------------------------------------------------------------------------ export
def test_cli_writes_the_graphs_with_state_as_named_inputs_and_outputs(exported, tiny_model):
    out_dir, printed = exported
    names = state_names(tiny_model)
    assert names[:4] == ["enc_norm.sum", "enc_norm.count", "enc.0.h", "enc.0.c"]
    assert {"sb.h", "sb.c", "sb_acc", "sb_out", "dec.1.c"} <= set(names)
    for stem in GRAPH_FILES.values():
        for suffix in (".onnx", ".int8.onnx"):
            path = out_dir / f"{stem}{suffix}"
            assert f"wrote {path}" in printed
            graph = onnx.load(str(path)).graph
            assert [i.name for i in graph.input] == ["mag", *names]
            assert [o.name for o in graph.output] == ["mask", *(f"{n}.next" for n in names)]
            batch = graph.input[0].type.tensor_type.shape.dim[0]
            assert batch.dim_param, "the batch axis should be dynamic"
    meta = {p.key: p.value for p in onnx.load(str(out_dir / "step_plain.onnx")).metadata_props}
    assert json.loads(meta["fsnet.model_config"]) == tiny_model.config.to_dict()
    assert json.loads(meta["fsnet.state"]) == names


def test_state_dtypes_survive_the_export(exported):
    """The norm sums and counts stay float64 across a call (no silent float32 round trip)."""
    out_dir, _ = exported
    for stem in GRAPH_FILES.values():
        graph = onnx.load(str(out_dir / f"{stem}.onnx")).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
        for name in ("enc_norm.sum", "enc_norm.count", "sb_norm.sum", "sb_norm.count"):
            assert types[f"{name}.next"] == onnx.TensorProto.DOUBLE, name
            if name in types:
                assert types[name] == onnx.TensorProto.DOUBLE, name


# ---------------------------------------------------------------------------- frame by frame
def test_onnx_step_equals_model_step_frame_by_frame(exported, tiny_model):
    """Mask and every state tensor after each of 300 frames, on sub-band and plain hops."""
    hop = OnnxHop(exported[0])
    batch, num_freqs = 2, tiny_model.config.num_freqs
    torch_state, onnx_state = tiny_model.init_state(batch), tiny_model.init_state(batch)
    rng = np.random.default_rng(1)
    ran_subband = []
    with torch.inference_mode():
        for t in range(300):
            scale = 0.05 + 2.0 * abs(np.sin(t / 40))
            mag = torch.from_numpy(scale * rng.random((batch, 1, num_freqs, 1))).float()
            ran_subband.append(tiny_model.runs_subband(t))
            expected = tiny_model.step(mag, torch_state)
            got = hop.step(mag, onnx_state)
            assert onnx_state["frames"] == torch_state["frames"] == t + 1
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=f"frame {t}")
            for (name, a), (_, b) in zip(
                flatten_state(onnx_state), flatten_state(torch_state), strict=True
            ):
                assert a.dtype == b.dtype, name
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{name}, frame {t}")
    assert ran_subband[0] and 50 < sum(ran_subband) < 250  # both graphs ran, frame 0 included


def test_dropping_the_state_changes_the_output(exported, tiny_model):
    """The comparison above can fail: a zero state fed mid-stream gives a different mask."""
    hop = OnnxHop(exported[0])
    num_freqs = tiny_model.config.num_freqs
    carried, dropped = tiny_model.init_state(1), tiny_model.init_state(1)
    rng = np.random.default_rng(2)
    diffs = []
    for t in range(120):
        mag = torch.from_numpy(rng.random((1, 1, num_freqs, 1), dtype=np.float32))
        if t == 60:  # forget everything but the frame counter, as a stateless export would
            frames = dropped["frames"]
            dropped = tiny_model.init_state(1)
            dropped["frames"] = frames
        a, b = hop.step(mag, carried), hop.step(mag, dropped)
        diffs.append(float((a - b).abs().max()))
    assert max(diffs[:60]) == 0.0
    assert min(diffs[60:90]) > 1e-4


# ------------------------------------------------------------------------------- the engine
@pytest.mark.parametrize(
    "chunk_sizes", [[256], [333], [1, 255, 1000, 7, 4096]], ids=["hop", "333", "mixed"]
)
def test_onnx_engine_equals_torch_engine(exported, tiny_model, chunk_sizes):
    """Several hundred frames through both engines, including the tail after flush()."""
    x = noise(5.0)  # 313 frames
    expected = run_engine(fsnet.StreamingEnhancer(tiny_model), x, chunk_sizes)
    engine = OnnxStreamingEnhancer(exported[0], model=tiny_model)
    got = run_engine(engine, x, chunk_sizes)
    assert got.shape == expected.shape == (x.shape[0] + engine.latency_samples,)
    assert np.abs(got - expected).max() <= 1e-5
    assert np.abs(expected).max() > 0.01  # not trivially equal
    # The engine resets after flush(): a second stream gives the same output again.
    np.testing.assert_array_equal(run_engine(engine, x, chunk_sizes), got)


def test_onnx_engine_shapes_the_mask_as_the_torch_engine(exported, tiny_model):
    """The mask is shaped in the shared front end: the ONNX engine streams what PyTorch streams."""
    shaping = fsnet.MaskShaping(postfilter=0.5, atten_lim_db=12)
    x = noise(1.0, seed=4)
    expected = run_engine(fsnet.StreamingEnhancer(tiny_model, shaping=shaping), x, [333])
    got = run_engine(
        OnnxStreamingEnhancer(exported[0], model=tiny_model, shaping=shaping), x, [333]
    )
    assert np.abs(got - expected).max() <= 1e-5
    plain = run_engine(OnnxStreamingEnhancer(exported[0], model=tiny_model), x, [333])
    assert np.abs(plain - expected).max() > 1e-3  # the shaping was applied


def test_onnx_engine_runs_a_batch_of_streams(exported, tiny_model):
    """B streams in one call (dynamic batch axis), each equal to the PyTorch engine's output;
    the engine builds its front end from the configuration stored in the graphs."""
    x = noise(2.0, seed=3, streams=3)
    engine = OnnxStreamingEnhancer(exported[0], num_streams=3)
    got = run_engine(engine, x, [500])
    expected = run_engine(fsnet.StreamingEnhancer(tiny_model, num_streams=3), x, [500])
    assert np.abs(got - expected).max() <= 1e-5
    single = run_engine(OnnxStreamingEnhancer(exported[0]), x[1], [500])
    assert np.abs(got[1] - single).max() <= 1e-5


def test_int8_graphs_stream_close_to_fp32(exported, tiny_model):
    x = noise(2.0, seed=4)
    fp32 = run_engine(OnnxStreamingEnhancer(exported[0]), x, [256])
    int8 = run_engine(OnnxStreamingEnhancer(exported[0], int8=True), x, [256])
    error = np.sqrt(np.mean((int8 - fp32) ** 2) / np.mean(fp32**2))
    assert 0 < error < 0.05


# ---------------------------------------------------------------------------------- errors
def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = main([str(tmp_path / "missing.pt"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and "not found" in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_file_name_and_unstreamable_models(tmp_path, tiny_model):
    with pytest.raises(fsnet.FsnetError, match="directory"):
        export_onnx(tiny_model, tmp_path / "model.onnx")
    offline_only = fsnet.FastFullSubNet(tiny_model.config, norm="utterance")
    with pytest.raises(fsnet.FsnetError, match="cannot stream"):
        export_onnx(offline_only, tmp_path / "out")


def test_engine_without_graphs_is_a_clear_error(tmp_path, exported):
    with pytest.raises(fsnet.FsnetError, match="not found"):
        OnnxStreamingEnhancer(tmp_path)
    fp32_only = tmp_path / "fp32"
    fp32_only.mkdir()
    for stem in GRAPH_FILES.values():
        (fp32_only / f"{stem}.onnx").write_bytes((exported[0] / f"{stem}.onnx").read_bytes())
    with pytest.raises(fsnet.FsnetError, match="--int8"):
        OnnxStreamingEnhancer(fp32_only, int8=True)


def test_evaluate_onnx_precision_is_a_streaming_cpu_option():
    from fsnet.evaluation import evaluate

    with pytest.raises(fsnet.FsnetError, match="streaming engine"):
        evaluate({"precision": "onnx", "mode": "offline"})
    with pytest.raises(fsnet.FsnetError, match="CPU path"):
        evaluate({"precision": "onnx-int8", "mode": "streaming", "device": "cuda"})
