"""Static int8 for the CPU: calibrated activation scales, one arithmetic offline and streaming.

Dynamic quantisation (fsnet.quantize.quantize_int8) picks each activation's scale from the tensor
of the call, so a frame quantises differently when it arrives alone (streaming) or with 600 others
(offline), and the two outputs drift apart. Here every scale is fixed:

- each recurrent layer's input ``x`` is quantised per input channel with the scale calibrated on
  real audio (``calibrate``: the largest |x| per channel, / 127), and that scale is folded into the
  weight columns, so the GEMM stays one int8 x int8 product;
- the recurrent state ``h`` lies in (-1, 1): its scale is 1/127, no calibration needed, and the
  ``h`` quantised for the next step also feeds the next layer and the projection, straight from
  the int8 state buffer that holds all of a layer stack's codes (:class:`Int8RecurrentLayer`);
- weights are int8 per output row (largest |w| / 127); products accumulate in int32
  (``torch._int_mm``, oneDNN's VNNI kernels), which is exact. Where a GEMM's inputs share one
  scale ([h_(k-1) | h_k] in a stack, see ``JOINT_INPUT_LAYERS``) the input and recurrent weights
  are one matrix and the cell one ``_int_mm``; the 64 sub-band rows are one GEMM per layer;
- the gates take one sigmoid (tanh(g) = 2 sigmoid(2g) - 1, the g rows' scale doubled, which is
  exact), and the state is updated in place: a hop allocates no state.

Exact integer GEMMs keep the offline and streaming outputs equal if every quantiser sees the same
float input bit for bit. :class:`Int8FastFullSubNet` makes sure of that by running any chunk as a
loop of one-frame ``forward_chunk`` calls: the float ops (mel, norm, sub-band averaging, gates)
then see tensors of the same shape in the same order whatever the chunking, so
``enhance`` and the streaming engine compute the same numbers (demo set, mode=both: waveforms
1.8e-7 apart, from the float overlap-add after the network). The spectrum the network reads comes
from the engine, which analyses all the frames of a call at once; each frame's magnitude is the
same bits batched or alone (a test checks it), so no quantiser sees a different input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fsnet.errors import FsnetError
from fsnet.layers import FUSED_ACTIVATION_ROWS, RecurrentLayer
from fsnet.model import FastFullSubNet

INT8_ENTRY = "int8_static"  # the release file's entry holding the calibration
INT8_SCHEME = "fsnet-int8-static/1"  # per-channel input absmax; h at 1/127; int8 weight rows
QMAX = 127
# Where int8 costs the most quality for the least time, the GEMM stays float32 (on one frame,
# so still the same call offline and streaming). The encoder's first layer reads the normalised
# mel spectrum, whose heavy tail a linear int8 grid cannot hold (demo set: 20 dB SNR against fp32
# from that layer alone); it is 64 inputs wide, about 0.1% of the model's MACs. The sub-band
# model's first layer reads 12 inputs per band: float32 there costs less than quantising them
# (one [64, 1536] int32 -> float pass fewer per step) and a 1 KB weight reads as fast.
FLOAT_INPUT_LAYERS = ("encoder.0", "bottleneck")
# The decoder's last projection writes the mask itself (514 outputs; +3 dB SNR against fp32).
FLOAT_PROJ_LAYERS = ("decoder.1",)
# Layers whose input GEMM joins the recurrent one ([x | h], one scale per weight row): one GEMM
# call and one int32 -> float pass fewer per frame. Elsewhere x keeps its own row scales: a
# joint row scale costs the demo set 0.6 dB SNR against fp32 at encoder.1, 3 dB at decoder.0,
# nothing at decoder.1 (its input, decoder.0's h, spans (-1, 1) on every channel, as h does).
JOINT_INPUT_LAYERS = ("decoder.1",)
# Smallest input scale: a channel that was always 0 in calibration quantises to 0 without
# dividing by zero, and a stray value there saturates instead of becoming inf.
MIN_SCALE = 1e-8


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight [N, K]`` -> (int8 ``[K, N]`` laid out for ``_int_mm``, scale per row ``[N]``)."""
    scale = (weight.abs().amax(dim=1) / QMAX).clamp_min(1e-12)
    q = torch.round(weight / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    # [N, K] contiguous, viewed as [K, N]: oneDNN's fast layout (3-4x the transposed copy's speed)
    return q.t(), scale.float()


class Int8RecurrentLayer(nn.Module):
    """A :class:`fsnet.layers.RecurrentLayer` (LSTM) with static int8 GEMMs, frame by frame.

    Same call as the float layer: ``x [B, T, input]`` -> ``(y [B, T, output], state)``. The state
    is ``(codes, c, views)``: ``codes [B, int input + L * H]`` int8 holds the quantised input and each
    layer's ``h`` side by side, so that layer k's GEMM input ``[input or h_(k-1) | h_k]`` is one
    slice of it: layers k >= 1 (and a ``joint_input`` first layer) take one ``_int_mm`` with one
    scale per weight row; a first layer otherwise two, its input keeping row scales of its own
    (``float_input``: a float32 GEMM for it). ``c [L, B, H]`` float32. Both are updated in place
    on every frame (no per-frame allocation of state). ``input_absmax [input]`` is the calibrated
    largest |x| per channel.
    """

    def __init__(
        self,
        layer: RecurrentLayer,
        input_absmax: torch.Tensor,
        float_input: bool = False,
        float_proj: bool = False,
        joint_input: bool = False,
    ):
        super().__init__()
        if not layer.is_lstm:
            raise FsnetError("static int8 supports LSTM models only (this one uses GRU)")
        hidden = layer.hidden_size
        self.num_layers, self.hidden_size = layer.num_layers, hidden
        self.relu_output = layer.relu_output
        in_scale = (input_absmax.float() / QMAX).clamp_min(MIN_SCALE)
        self.register_buffer("inv_in_scale", 1.0 / in_scale)
        self.register_buffer("qmax", torch.tensor(float(QMAX)))
        self.register_buffer("minus_qmax", torch.tensor(-float(QMAX)))
        self.register_buffer("zero", torch.zeros(()))
        # Input columns held as int8 codes in the state (none where the first GEMM is float).
        self.code_input = 0 if float_input else layer.rnn.input_size
        self.float_input, self.float_proj = float_input, float_proj
        h_scale = torch.full((hidden,), 1.0 / QMAX)  # h = o * tanh(c) lies in (-1, 1)
        # Gate rows in the order (i, f, o, g), the g rows doubled (exact): one sigmoid covers all
        # four gates, tanh(g) taken as 2 sigmoid(2g) - 1.
        order = torch.cat([torch.arange(n * hidden, (n + 1) * hidden) for n in (0, 1, 3, 2)])
        double_g = torch.ones(4 * hidden)
        double_g[3 * hidden :] = 2.0
        self._cells, self._writes = [], []
        for k in range(layer.num_layers):
            # the code columns of layer k's input (the layer's input or h_(k-1)) and of its h_k
            start = self.code_input + k * hidden
            inputs = slice(0 if k == 0 else start - hidden, start)
            own = slice(start, start + hidden)
            w_ih, w_hh, b_ih, b_hh = (t.detach().float()[order] for t in layer._layer_weights(k))
            w_hh = w_hh * h_scale
            if k == 0 and float_input:  # x @ w_ih in float32: the same call offline and streaming
                self.register_buffer("w_x", (w_ih * double_g[:, None]).t().contiguous())
                parts = [(own, w_hh)]
            elif k == 0 and not joint_input:  # calibrated input scales: own row scales
                parts = [(inputs, w_ih * in_scale), (own, w_hh)]
            else:  # [h_(k-1) | h_k], both at 1/127: one GEMM, one scale per row
                x_scale = in_scale if k == 0 else h_scale
                parts = [(slice(inputs.start, own.stop), torch.cat((w_ih * x_scale, w_hh), 1))]
            cell = []
            for n, (columns, weight) in enumerate(parts):
                w_q, scale = _quantize_rows(weight)
                self.register_buffer(f"w{k}_{n}", w_q)
                self.register_buffer(f"s{k}_{n}", scale * double_g)
                cell.append((columns, f"w{k}_{n}", f"s{k}_{n}"))
            self.register_buffer(f"bias{k}", (b_ih + b_hh) * double_g)
            self._cells.append(cell)
            self._writes.append(own)
        # per layer: (bias, ((weight, scale) of each GEMM)), names in the buffer registry
        self._plans = tuple(
            (f"bias{k}", tuple((w, scale) for _, w, scale in cell))
            for k, cell in enumerate(self._cells)
        )
        self.has_proj = layer.proj is not None
        if self.has_proj:
            weight = layer.proj.weight.detach().float()
            if float_proj:
                w_q, s = weight.t().contiguous(), torch.ones(())
            else:
                w_q, s = _quantize_rows(weight / QMAX)
            self.register_buffer("w_proj", w_q)
            self.register_buffer("s_proj", s)
            self.register_buffer("b_proj", layer.proj.bias.detach().float().clone())

    def zero_state(self, batch: int, device: torch.device | str | None = None):
        """``(codes, c, views)`` of a new stream: int8 ``[B, int input + L * H]``, float
        ``[L, B, H]`` (2 c where the rows are many, see ``_cell``), and the views of them each
        frame reads and writes, with per-layer work buffers for the gates and the new h (made
        once per stream: a slice or an allocation costs about as much as a small op)."""
        hidden = self.hidden_size
        width = self.code_input + self.num_layers * hidden
        codes = torch.zeros(batch, width, dtype=torch.int8, device=device)
        c = torch.zeros(self.num_layers, batch, hidden, device=device)
        cells = []
        few_rows = batch < FUSED_ACTIVATION_ROWS
        for k, (parts, own) in enumerate(zip(self._cells, self._writes, strict=True)):
            gates = torch.zeros(batch, 4 * hidden, device=device)
            work = torch.zeros(2, batch, hidden, device=device)
            cells.append(
                (
                    tuple(codes[:, columns] for columns, _, _ in parts),
                    codes[:, own],
                    c[k],
                    gates,
                    gates.chunk(4, 1),  # i, f, o, sigmoid(2 g)
                    work.unbind(),
                    few_rows,
                )
            )
        views = {"input": codes[:, : self.code_input], "cells": tuple(cells), "last": cells[-1][1]}
        return codes, c, views

    def _cell(self, k: int, x: torch.Tensor, views: tuple, float_h: bool) -> torch.Tensor | None:
        """Layer ``k`` on one frame: reads its input and ``h`` codes (``x``: the float input of a
        float first GEMM), updates its ``c`` and ``h`` codes in place (``views``: the state's
        ``views["cells"][k]``) and returns the float ``h [B, H]`` where ``float_h`` (else None:
        the codes are all the next GEMM reads).

        With many rows (the bands) ATen's sigmoid is ~10x faster per element than its tanh, so
        tanh(c) is taken as 2 sigmoid(2c) - 1, and the state holds 2c (which needs no more ops
        to update than c), so that the sigmoid reads it as it is."""
        buffers = self._buffers  # straight from the registry: __getattr__ costs a call per name
        inputs, codes_h, c, gates, (i, f, o, sig_g), (work, spare), few_rows = views
        bias, gemms = self._plans[k]
        w, scale = gemms[0]
        acc = torch._int_mm(inputs[0], buffers[w])
        if k == 0 and self.float_input:
            torch.addmm(buffers[bias], x, buffers["w_x"], out=gates)
            gates.addcmul_(acc, buffers[scale])
        else:  # an int32 x float32 addcmul promotes without a separate conversion (same bits)
            torch.addcmul(buffers[bias], acc, buffers[scale], out=gates)
        if len(gemms) > 1:  # a first layer's input and h GEMMs, each with its own row scales
            w, scale = gemms[1]
            gates.addcmul_(torch._int_mm(inputs[1], buffers[w]), buffers[scale])
        gates.sigmoid_()
        # c = f c + i (2 sigmoid(2g) - 1); with many rows all of it doubled
        c.mul_(f)
        c.addcmul_(i, sig_g, value=2.0 if few_rows else 4.0)
        c.sub_(i, alpha=1.0 if few_rows else 2.0)
        if float_h:
            if few_rows:
                h = c.tanh().mul_(o)
            else:
                h = c.sigmoid().mul_(o)
                h += h
                h.sub_(o)  # o (2 sigmoid(2c) - 1)
            # |h| < 1, so |127 h| rounds to at most 127: no clamp needed. (A 0-d tensor
            # operand: a Python scalar costs a conversion per call.)
            codes_h.copy_(h.mul(buffers["qmax"]).round_())
            return h
        # 127 h straight into the work buffer, in fewer ops
        if few_rows:  # 127 o tanh(c)
            torch.tanh(c, out=work)
            torch.addcmul(buffers["zero"], work, o, value=float(QMAX), out=work)
        else:  # 127 o (2 sigmoid(2c) - 1) = 254 o sigmoid(2c) - 127 o
            torch.sigmoid(c, out=work)
            torch.mul(o, buffers["minus_qmax"], out=spare)
            torch.addcmul(spare, o, work, value=2.0 * QMAX, out=work)
        codes_h.copy_(work.round_())
        return None

    def _frame(self, x: torch.Tensor, views: dict) -> torch.Tensor:
        """One frame ``x [B, input]`` -> ``[B, output or hidden]``; updates the state in place."""
        buffers = self._buffers  # straight from the registry: __getattr__ costs a call per name
        if not self.float_input:
            # round(x / scale), saturated at +-127; the copy converts the integers to int8
            scaled = x.mul(buffers["inv_in_scale"]).round_().clamp_(-QMAX, QMAX)
            views["input"].copy_(scaled)
        last = self.num_layers - 1
        float_h = self.float_proj or not self.has_proj  # does anything read the last h as float?
        for k, cell_views in enumerate(views["cells"]):
            h = self._cell(k, x, cell_views, float_h and k == last)
        if not self.has_proj:
            return h
        if self.float_proj:
            y = torch.addmm(buffers["b_proj"], h, buffers["w_proj"])
        else:
            acc = torch._int_mm(views["last"], buffers["w_proj"])
            y = torch.addcmul(buffers["b_proj"], acc, buffers["s_proj"])
        return torch.relu_(y) if self.relu_output else y

    def forward(self, x: torch.Tensor, state=None):
        """``x [B, T, input]`` -> ``(y [B, T, output or hidden], state)``; the state (see
        ``zero_state``) is updated in place."""
        batch, num_frames, _ = x.shape
        if state is None:
            state = self.zero_state(batch, x.device)
        views = state[2]
        if num_frames == 1:
            y = self._frame(x.select(1, 0).float(), views).unsqueeze(1)
        else:
            y = torch.stack([self._frame(x[:, t].float(), views) for t in range(num_frames)], 1)
        if self.relu_output and not self.has_proj:
            y = torch.relu(y)
        return y, state


class Int8FastFullSubNet(FastFullSubNet):
    """A FastFullSubNet whose recurrent layers run static int8 (:class:`Int8RecurrentLayer`).

    ``forward_chunk`` runs any number of frames as one-frame steps, so every float op before a
    quantiser sees the same tensor shapes offline and streaming: the same input gives the same
    output bits whatever the chunking.
    """

    def forward_chunk(self, noisy_mag: torch.Tensor, state: dict, whole: bool = False):
        if noisy_mag.shape[-1] == 1:
            return super().forward_chunk(noisy_mag, state)
        frames = noisy_mag.unbind(-1)
        outs = [super(Int8FastFullSubNet, self).forward_chunk(f[..., None], state) for f in frames]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


def recurrent_layers(model: FastFullSubNet) -> dict[str, RecurrentLayer]:
    """``{name: layer}`` of the model's recurrent layers, names as in its state dict."""
    return {n: m for n, m in model.named_modules() if isinstance(m, RecurrentLayer)}


def quantize_static(model: FastFullSubNet, calibration: Mapping[str, Any]) -> Int8FastFullSubNet:
    """A CPU :class:`Int8FastFullSubNet` from fp32 ``model`` and a calibration (``calibrate``'s
    result, or the ``int8_static`` entry of a release file); ``model`` is left untouched."""
    if calibration.get("scheme") != INT8_SCHEME:
        raise FsnetError(
            f"unknown int8 calibration scheme {calibration.get('scheme')!r} (expected "
            f"{INT8_SCHEME!r}); calibrate again with python -m fsnet.quantize"
        )
    if model.norm != "cumulative":
        raise FsnetError("static int8 needs the causal cumulative norm (this model: utterance)")
    absmax = calibration.get("input_absmax")
    layers = recurrent_layers(model)
    if not isinstance(absmax, Mapping) or set(absmax) != set(layers):
        raise FsnetError(
            f"the int8 calibration covers layers {sorted(absmax or ())}, the model has "
            f"{sorted(layers)}: it was made for another model"
        )
    quantized = Int8FastFullSubNet(model.config, norm=model.norm)
    quantized.load_state_dict(model.state_dict())
    for name, layer in layers.items():
        scale = absmax[name]
        if not isinstance(scale, torch.Tensor) or scale.shape != (layer.rnn.input_size,):
            raise FsnetError(f"int8 calibration of {name!r} does not fit the layer's input")
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        new = Int8RecurrentLayer(
            layer,
            scale,
            float_input=name in FLOAT_INPUT_LAYERS,
            float_proj=name in FLOAT_PROJ_LAYERS,
            joint_input=name in JOINT_INPUT_LAYERS,
        )
        if isinstance(parent, nn.ModuleList):
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
    return quantized.cpu().eval()


@torch.inference_mode()
def calibrate(model: FastFullSubNet, signals: Iterable[np.ndarray], source: str = "") -> dict:
    """Run fp32 ``model`` offline over ``signals`` (1-D, the model's rate) and return the
    calibration: the largest |input| per channel of every recurrent layer (plain data, for the
    release file's ``int8_static`` entry)."""
    from fsnet.enhance import enhance

    layers = recurrent_layers(model)
    absmax = {n: torch.zeros(layer.rnn.input_size) for n, layer in layers.items()}

    def hook(name):
        def record(_module, args):
            seen = args[0].detach().abs().float().amax(dim=(0, 1)).cpu()
            torch.maximum(absmax[name], seen, out=absmax[name])

        return record

    handles = [layer.register_forward_pre_hook(hook(n)) for n, layer in layers.items()]
    samples = 0
    try:
        for x in signals:
            enhance(model, x)
            samples += len(x)
    finally:
        for handle in handles:
            handle.remove()
    if not samples:
        raise FsnetError("no audio to calibrate int8 scales on")
    return {
        "scheme": INT8_SCHEME,
        "input_absmax": absmax,
        "seconds": samples / model.config.sample_rate,
        "source": source,
    }


def stored_calibration(path) -> dict | None:
    """The ``int8_static`` entry of a release file (None when it has none), read as plain data."""
    from fsnet.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    entry = payload.get(INT8_ENTRY) if isinstance(payload, dict) else None
    if entry is not None and not isinstance(entry, dict):
        raise FsnetError(
            f"{path}: the {INT8_ENTRY!r} entry is a {type(entry).__name__}, not a dict"
        )
    return entry


def load_int8_model(path) -> Int8FastFullSubNet:
    """The static-int8 model of a release file made by ``python -m fsnet.quantize``."""
    from fsnet.checkpoint import load_model

    calibration = stored_calibration(path)
    if calibration is None:
        raise FsnetError(
            f"{path} holds no int8 calibration; make one with "
            f"python -m fsnet.quantize --calibrate <audio folder> {path} <int8 release>"
        )
    return quantize_static(load_model(path), calibration)
