"""ONNX export of the per-hop network step, and an ONNX Runtime streaming engine around it.

``python -m fsnet.onnx_export [CHECKPOINT] OUT_DIR [--int8]`` writes two graphs into ``OUT_DIR``
(and with ``--int8`` an int8 version of each beside them):

* ``step_plain.onnx``: one hop on which the sub-band model does not step;
* ``step_subband.onnx``: one hop on which it does (``model.runs_subband(frame_index)``: frame 0
  and every ``shrink_size``-th frame after it);
* with ``--int8`` also ``step_plain.int8.onnx`` / ``step_subband.int8.onnx``: the same graphs
  with dynamic-int8 weights (``onnxruntime.quantization.quantize_dynamic``).

Each graph is ``FastFullSubNet.step`` on one frame: ``mag [B, 1, F, 1]`` and the carried state
in, the decoder output ``mask [B, 2, F, 1]`` and the new state out. Nothing is remembered inside
ONNX Runtime between calls: every state tensor is a named graph input, and its new value the
graph output of the same name plus ``.next``. The state, in input order after ``mag``
(defined by ``map_state``; B streams, M mel bands, K sub-band unit size, L sub-band layers):

==================  =======  ==============  =================================================
name                dtype    shape           meaning
==================  =======  ==============  =================================================
enc_norm.sum        float64  [B]             encoder cumulative norm: running sum
enc_norm.count      float64  []              frames seen so far = index of this frame
enc.{i}.h, .c       float32  [1, B, H_i]     encoder layer i (GRU models: ``.h`` only)
sb_norm.sum         float64  [B*M]           sub-band cumulative norm: running sum
sb_norm.count       float64  []              sub-band steps so far
sb.h, sb.c          float32  [L, B*M, H]     sub-band model
sb_acc              float32  [B, M, K, 1]    sub-band units summed since the last sub-band step
sb_out              float32  [B, M, 1]       the sub-band model's latest output
dec.{i}.h, .c       float32  [1, B, H_i]     decoder layer i
==================  =======  ==============  =================================================

The caller picks the graph: ``step_subband`` when ``enc_norm.count % shrink_size == 0``, else
``step_plain``. Frame 0 is a sub-band block of its own: the sub-band graph divides ``sb_acc`` by
1 when ``enc_norm.count == 0`` and by ``shrink_size`` otherwise, decided inside the graph from
that input, so no hidden host-side counter is involved. A zero state is the start of a stream.
The batch size is a dynamic axis. ``OnnxStreamingEnhancer`` runs the graphs inside the PyTorch
``StreamingEnhancer`` front end (STFT, look-ahead, overlap-add); its output equals the PyTorch
engine's to float32 rounding (``tests/test_onnx.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsnet.config import ModelConfig
from fsnet.errors import FsnetError
from fsnet.frontend import MaskShaping
from fsnet.interrupts import interrupts_held
from fsnet.model import FastFullSubNet
from fsnet.streaming import StreamingEnhancer, check_streamable

FORMAT_VERSION = 1
OPSET = 18  # torch 2.11's exporter library is written for opset 18: no version conversion
GRAPH_FILES = {False: "step_plain", True: "step_subband"}  # keyed by runs_subband


# ----------------------------------------------------------------------------- state layout
def map_state(state: Mapping[str, Any], fn: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A copy of a ``FastFullSubNet.init_state(batch_size)`` state with every tensor replaced by
    ``fn(name, tensor)``, called in the flat order of the graphs' state inputs."""

    def recurrent(prefix: str, s: Any) -> Any:  # LSTM: (h, c); GRU: h
        if isinstance(s, tuple):
            return fn(f"{prefix}.h", s[0]), fn(f"{prefix}.c", s[1])
        return fn(f"{prefix}.h", s)

    out = dict(state)
    out["enc_norm"] = (
        fn("enc_norm.sum", state["enc_norm"][0]),
        fn("enc_norm.count", state["enc_norm"][1]),
    )
    out["enc"] = {i: recurrent(f"enc.{i}", state["enc"][i]) for i in sorted(state["enc"])}
    out["sb_norm"] = (
        fn("sb_norm.sum", state["sb_norm"][0]),
        fn("sb_norm.count", state["sb_norm"][1]),
    )
    out["sb"] = recurrent("sb", state["sb"])
    out["sb_acc"] = fn("sb_acc", state["sb_acc"])
    out["sb_out"] = fn("sb_out", state["sb_out"])
    out["dec"] = {i: recurrent(f"dec.{i}", state["dec"][i]) for i in sorted(state["dec"])}
    return out


def flatten_state(state: Mapping[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """``[(name, tensor), ...]`` of a fixed-layout state, in graph input order."""
    items: list[tuple[str, torch.Tensor]] = []
    map_state(state, lambda name, t: items.append((name, t)) or t)
    return items


def state_names(model: FastFullSubNet) -> list[str]:
    """The state input names of ``model``'s hop graphs, in order."""
    return [name for name, _ in flatten_state(model.init_state(1))]


# ----------------------------------------------------------------------------------- export
class _HopGraph(nn.Module):
    """``FastFullSubNet.step`` with a flat, explicit state: ``(mag, *state) -> (mask, *state)``.

    The same stages in the same order as ``step``; what ``step`` decides with its Python frame
    counter is fixed per graph (``runs_subband``) or read from the ``enc_norm.count`` input.
    """

    def __init__(self, model: FastFullSubNet, runs_subband: bool):
        super().__init__()
        self.model = model
        self.runs_subband = runs_subband
        self.template = model.init_state(1)

    def forward(self, mag: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, values = self.model, iter(flat)
        state = map_state(self.template, lambda name, t: next(values))
        frame_index = state["enc_norm"][1]  # before encode() counts this frame
        mel = model.to_mel(mag[:, 0])
        encoded = model.encode(mel, state)
        model.step_subband(model.subband_units(mel, encoded), state, frame_index, self.runs_subband)
        mask = model.decode(encoded, state["sb_out"], state)
        return (mask, *(t for _, t in flatten_state(state)))


def _dynamic_shapes(model: FastFullSubNet, state: Mapping[str, Any]) -> tuple:
    """torch.export shapes of ``(mag, *state)``: the batch axis (B or B*M rows) is dynamic."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows = batch * model.config.num_mels

    def spec(name: str, t: torch.Tensor) -> dict[int, Any]:
        if t.dim() == 0:
            return {}
        if name.startswith("sb_norm"):
            return {0: rows}
        if name.startswith("sb."):
            return {1: rows}
        if name.startswith(("enc.", "dec.")):
            return {1: batch}
        return {0: batch}

    # torch.export sees forward(mag, *flat) as two inputs: mag and the tuple of state tensors.
    return ({0: batch}, tuple(spec(name, t) for name, t in flatten_state(state)))


def _drop_warnings(record: logging.LogRecord) -> bool:
    return record.levelno > logging.WARNING


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's and quantizer's notices (torchvision missing, deprecations, the
    quantizer's "consider pre-processing" advice, which it logs on the root logger)."""
    exporters = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in exporters]
    for logger in exporters:
        logger.setLevel(logging.ERROR)  # also quiets their child loggers
    root = logging.getLogger()
    root.addFilter(_drop_warnings)  # a filter, not a level: other loggers' records pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(exporters, levels, strict=True):
            logger.setLevel(level)
        root.removeFilter(_drop_warnings)


def _check_exportable(model: FastFullSubNet) -> None:
    check_streamable(model)
    layers = [*model.encoder, model.bottleneck, *model.decoder]
    if not all(hasattr(layer.rnn, "weight_ih_l0") for layer in layers):
        raise FsnetError(
            "export the float32 model: quantized PyTorch modules do not export; "
            "use --int8 to quantize the ONNX graphs instead"
        )


def export_graph(model: FastFullSubNet, runs_subband: bool, path: str | os.PathLike) -> Path:
    """Write one hop graph (with or without the sub-band step) as a self-contained .onnx file."""
    import onnx

    from fsnet.files import atomic_write

    _check_exportable(model)
    model = model.cpu().eval()
    example_state = model.init_state(2)  # batch 2: a dimension of size 1 would be specialised
    args = (
        torch.rand(2, 1, model.config.num_freqs, 1),
        *(t for _, t in flatten_state(example_state)),
    )
    names = [name for name, _ in flatten_state(example_state)]
    # Grad mode on: the layers then take their portable cell-kernel path (torch.lstm_cell)
    # rather than the CPU-only oneDNN packed-weight kernels of inference mode. Ctrl-C waits the
    # few seconds of the export: one inside its lazy import of torch._dynamo leaves that module
    # half-initialised, and the exporter reports it as a failed export with a long traceback.
    with _quiet_exporter(), torch.enable_grad(), interrupts_held():
        program = torch.onnx.export(
            _HopGraph(model, runs_subband),
            args,
            input_names=["mag", *names],
            output_names=["mask", *(f"{n}.next" for n in names)],
            dynamic_shapes=_dynamic_shapes(model, example_state),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    metadata = {
        "fsnet.format_version": str(FORMAT_VERSION),
        "fsnet.graph": GRAPH_FILES[runs_subband],
        "fsnet.model_config": json.dumps(model.config.to_dict()),
        "fsnet.state": json.dumps(names),
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    with atomic_write(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


def _gemm_as_matmul(proto) -> None:
    """Rewrite ``Gemm(x, W, b, transB=1)`` with a constant ``W`` as ``MatMul(x, W^T) + b``.

    ONNX Runtime's dynamic quantization handles MatMul but not Gemm; the exporter writes every
    Linear / LSTM-cell product as a Gemm.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        simple = (
            node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
            and node.input[1] in weights
        )
        if not simple:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        w_name = f"{node.input[1]}__matmul_{len(nodes)}"
        graph.initializer.append(numpy_helper.from_array(w, w_name))
        product = f"{node.output[0]}__matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [product]))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    onnx.checker.check_model(proto)


def quantize_graph(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write an int8 copy of a hop graph: int8 weights, activations quantized per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fsnet.files import atomic_write

    proto = onnx.load(str(src))
    _gemm_as_matmul(proto)
    with atomic_write(dst) as tmp:
        with _quiet_exporter():
            quantize_dynamic(
                proto,
                str(tmp),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
        quantized = onnx.load(str(tmp))
        quantized.metadata_props.add(key="fsnet.precision", value="int8")
        onnx.save_model(quantized, str(tmp))
    return Path(dst)


def export_onnx(
    model: FastFullSubNet, out_dir: str | os.PathLike, int8: bool = False
) -> list[Path]:
    """Write ``step_plain.onnx`` and ``step_subband.onnx`` (and with ``int8`` their
    ``.int8.onnx`` versions) into ``out_dir``; returns the paths written."""
    _check_exportable(model)
    out_dir = Path(out_dir)
    if out_dir.suffix == ".onnx":
        raise FsnetError(
            f"{out_dir}: give a directory; the export writes two graphs "
            f"({GRAPH_FILES[False]}.onnx, {GRAPH_FILES[True]}.onnx)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise FsnetError(f"{out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for runs_subband, stem in GRAPH_FILES.items():
        fp32 = export_graph(model, runs_subband, out_dir / f"{stem}.onnx")
        written.append(fp32)
        if int8:
            written.append(quantize_graph(fp32, out_dir / f"{stem}.int8.onnx"))
    return written


# ---------------------------------------------------------------------------------- runtime
def _session(path: Path, num_threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        reason = " ".join(str(exc).split())[:200]
        raise FsnetError(f"cannot load ONNX graph {path}: {reason}") from None


class OnnxHop:
    """The two hop graphs of ``export_onnx`` in ONNX Runtime, called like ``FastFullSubNet.step``.

    ``step(mag, state)`` takes a fixed-layout state (``model.init_state(batch_size)``, with its
    ``frames`` counter), runs the graph that frame needs and rebinds the state's entries to the
    new tensors, as ``FastFullSubNet.step`` does. ``int8`` picks the ``.int8.onnx`` graphs.
    """

    def __init__(self, onnx_dir: str | os.PathLike, int8: bool = False, num_threads: int = 1):
        onnx_dir = Path(onnx_dir)
        suffix = ".int8.onnx" if int8 else ".onnx"
        paths = {k: onnx_dir / f"{stem}{suffix}" for k, stem in GRAPH_FILES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            hint = " (export with --int8)" if int8 else ""
            raise FsnetError(f"ONNX graph(s) not found: {', '.join(missing)}{hint}")
        self.sessions = {k: _session(p, num_threads) for k, p in paths.items()}
        meta = self.sessions[True].get_modelmeta().custom_metadata_map
        try:
            self.config = ModelConfig.from_dict(json.loads(meta["fsnet.model_config"]))
            names = json.loads(meta["fsnet.state"])
        except (KeyError, ValueError) as exc:
            raise FsnetError(f"{paths[True]} is not an fsnet hop graph (missing {exc})") from None
        expected_outputs = ["mask", *(f"{n}.next" for n in names)]
        for runs_subband, session in self.sessions.items():
            outputs = [o.name for o in session.get_outputs()]
            unknown_inputs = {i.name for i in session.get_inputs()} - {"mag", *names}
            if outputs != expected_outputs or unknown_inputs:
                raise FsnetError(f"{paths[runs_subband]} does not have the expected state layout")
        # Feed each graph the inputs it declares (an exporter may drop unread ones).
        self.inputs = {k: [i.name for i in s.get_inputs()] for k, s in self.sessions.items()}
        self.state_names = names
        self.int8 = int8

    def step(self, mag: torch.Tensor, state: dict) -> torch.Tensor:
        """One frame ``mag [B, 1, F, 1]`` -> decoder output ``[B, 2, F, 1]``; updates ``state``."""
        frame_index = state["frames"]
        runs_subband = self.config.runs_subband(frame_index)
        values = dict(flatten_state(state))
        values["mag"] = mag
        feeds = {name: values[name].numpy() for name in self.inputs[runs_subband]}
        mask, *new_state = self.sessions[runs_subband].run(None, feeds)
        new_values = iter(new_state)
        state.update(map_state(state, lambda name, t: torch.from_numpy(next(new_values))))
        state["frames"] = frame_index + 1
        return torch.from_numpy(mask)


class OnnxStreamingEnhancer(StreamingEnhancer):
    """``StreamingEnhancer`` whose network step runs in ONNX Runtime on the CPU (``OnnxHop``).

    ``onnx_dir`` is what ``export_onnx`` wrote. The front end (STFT, look-ahead, overlap-add),
    the API and the latency are the PyTorch engine's. ``model`` is only used for that front end
    and the state layout; without it one is built from the configuration stored in the graphs
    (its network weights are then random and never used). ``shaping`` is the PyTorch engine's
    (the mask is shaped in the front end, outside the graphs).
    """

    _int_counts = False  # the graphs read and write every state entry as a tensor

    def __init__(
        self,
        onnx_dir: str | os.PathLike,
        num_streams: int = 1,
        int8: bool = False,
        num_threads: int = 1,
        model: FastFullSubNet | None = None,
        shaping: MaskShaping | None = None,
    ):
        self.onnx = OnnxHop(onnx_dir, int8=int8, num_threads=num_threads)
        if model is None:
            model = FastFullSubNet(self.onnx.config)
        elif model.config != self.onnx.config:
            raise FsnetError(f"the ONNX graphs in {onnx_dir} are for another model configuration")
        super().__init__(model.cpu(), num_streams=num_streams, shaping=shaping)
        if state_names(self.model) != self.onnx.state_names:
            raise FsnetError(f"the ONNX graphs in {onnx_dir} have another state layout")

    def _network_chunk(self, mag: torch.Tensor, state: dict) -> torch.Tensor:
        # The graphs take one frame: a chunk runs frame by frame.
        frames = [self.onnx.step(mag[..., t : t + 1], state) for t in range(mag.shape[-1])]
        return frames[0] if len(frames) == 1 else torch.cat(frames, dim=-1)


# -------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m fsnet.onnx_export [CHECKPOINT] OUT_DIR [--int8]``."""
    import argparse

    from fsnet.checkpoint import load_model
    from fsnet.cli import run

    parser = argparse.ArgumentParser(
        prog="python -m fsnet.onnx_export",
        description="Export the per-hop network step (state carried explicitly) as ONNX graphs "
        "for fsnet.onnx_export.OnnxStreamingEnhancer.",
    )
    parser.add_argument(
        "checkpoint", nargs="?", default=None, help="checkpoint (default: the bundled model)"
    )
    parser.add_argument("out_dir", help="directory to write the graphs into (created)")
    parser.add_argument(
        "--int8", action="store_true", help="also write dynamic-int8 versions (*.int8.onnx)"
    )
    args = parser.parse_args(argv)

    def work() -> int:
        written = export_onnx(load_model(args.checkpoint), args.out_dir, int8=args.int8)
        for path in written:
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0

    return run(work, user_errors=(OSError,))


if __name__ == "__main__":
    raise SystemExit(main())
