"""Recurrent building block shared by the offline model and the streaming engine."""

from __future__ import annotations

import torch
from torch import nn

from fsnet import fused_lstm

RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c), [L, B, H]

# Rows (streams, or streams x bands) from which a packed LSTM step takes oneDNN's activations:
# below it, two GEMM calls instead of one cost more than ATen's tanh saves on so few elements.
FUSED_ACTIVATION_ROWS = 16
# Below this many frames, a chunk runs frame by frame on packed cells:
# oneDNN's sequence kernel re-packs the weights on every call, which only pays off over longer runs.
CELL_LOOP_FRAMES = 16
# From this many sequences on (the sub-band model: batch x 64 bands), training_kernel="auto"
# takes fsnet.fused_lstm's kernels instead of cuDNN's; the full-band layers (one sequence per
# example) keep cuDNN's.
FUSED_TRAINING_ROWS = 1024
TRAINING_KERNELS = ("cudnn", "auto", "fused")


def set_training_kernel(module: nn.Module, kind: str) -> None:
    """``training_kernel`` of every RecurrentLayer in ``module`` (see RecurrentLayer)."""
    if kind not in TRAINING_KERNELS:
        raise ValueError(f"LSTM training kernel must be one of {TRAINING_KERNELS}, got {kind!r}")
    for layer in module.modules():
        if isinstance(layer, RecurrentLayer):
            layer.training_kernel = kind


class RecurrentLayer(nn.Module):
    """Uni-directional LSTM/GRU stack, optionally followed by a linear projection and a ReLU.

    ``forward`` runs whole sequences through cuDNN/oneDNN kernels; a single frame (T == 1) takes
    the cell kernels on the *same* parameters, which is the cheap way to step a stream. Both
    paths read and write the same state layout, so a sequence can be split anywhere.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        output_size: int = 0,
        relu_output: bool = False,
        rnn_type: str = "LSTM",
    ):
        super().__init__()
        rnn_class = {"LSTM": nn.LSTM, "GRU": nn.GRU}[rnn_type]
        self.rnn = rnn_class(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.proj = nn.Linear(hidden_size, output_size) if output_size else None
        self.relu_output = relu_output
        self.is_lstm = rnn_type == "LSTM"
        # Which kernels a training forward takes: cudnn (nn.LSTM's own), auto (fsnet.fused_lstm
        # on CUDA from FUSED_TRAINING_ROWS sequences on), or fused (always; also on CPU, for tests).
        self.training_kernel = "cudnn"
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        # Parameter names per layer, formatted once: the frame path looks them up every hop.
        self._weight_names = [
            tuple(f"{name}_l{k}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(num_layers)
        ]

    def zero_state(self, batch: int, device: torch.device | str | None = None) -> RecurrentState:
        """All-zero state for ``batch`` sequences (what nn.LSTM assumes when given None)."""
        h = torch.zeros(self.num_layers, batch, self.hidden_size, device=device)
        return (h, h.clone()) if self.is_lstm else h

    def _layer_weights(self, k: int) -> tuple[torch.Tensor, ...]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer ``k``, as nn.LSTM/GRU hold them."""
        # Straight from the registry: nn.Module.__getattr__ costs a Python call per name.
        params = self.rnn._parameters
        w_ih, w_hh, b_ih, b_hh = self._weight_names[k]
        return params[w_ih], params[w_hh], params[b_ih], params[b_hh]

    def _packed_lstm_cell(
        self, k: int, x: torch.Tensor, h_prev: torch.Tensor, c_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """LSTM layer ``k`` on one frame ``x [B, input]`` with [W_ih | W_hh] packed once
        (CPU inference) -> ``(h, c)``, each ``[B, H]``.

        MKL's sgemm falls far behind oneDNN's packed kernels on many rows (2x on AVX-512
        machines, the sub-band model's 64 bands), but on a few rows it reads the weights, once
        transposed, as fast from cache and 10-30% faster from memory (where a hop's weights
        come from), and costs ~1 us per call against oneDNN's ~15 us. The pack is a cache keyed
        on the parameters' versions, so an optimiser step invalidates it. Grad mode (training, ONNX
        export) never takes this path. Returns None where the fast path does not apply.

        The gate rows are packed in the order (i, f, o, g), not nn.LSTM's (i, f, g, o): the
        three sigmoid gates are one block, activated by one call. Moving rows of the weight
        moves output columns and nothing else (same sums, same bits); the one sigmoid call can
        differ from three in the last bit where H is not a multiple of the vector width (ATen
        runs loop tails through scalar code).
        """
        if (
            torch.is_grad_enabled()
            or x.device.type != "cpu"
            or not self.is_lstm
            or torch.is_autocast_enabled("cpu")
        ):
            return None
        rows, hidden = x.shape[0], self.hidden_size
        entry = self._cached_pack(k, rows, "joint")
        if entry is None:
            return None
        xh = torch.cat((x, h_prev), 1)
        fused = len(entry) == 4  # see _pack_lstm_layer
        if not fused:
            weight_t, bias = entry
            gates = torch.addmm(bias, xh, weight_t)
            # In place on the fresh gates: fewer kernel calls and allocations per frame.
            gates[:, : 3 * hidden].sigmoid_()
            i, f, o, g = gates.chunk(4, 1)
            g = g.tanh_()
        else:
            # Many rows (the sub-band model's bands): ATen's tanh (Sleef, ~2.4 ns/element on
            # AVX-512) is the costliest op after the GEMM; oneDNN's activations, fused into the
            # GEMM or on a oneDNN tensor, are 2-5x faster and within 2 ulp (ATen: 1).
            packed_ifo, bias_ifo, packed_g, bias_g = entry
            ifo = torch.ops.mkldnn._linear_pointwise(xh, packed_ifo, bias_ifo, "sigmoid", [], "")
            g = torch.ops.mkldnn._linear_pointwise(xh, packed_g, bias_g, "tanh", [], "")
            i, f, o = ifo.chunk(3, 1)
        # lstm_cell's arithmetic: each product and the sum rounded once.
        c = f * c_prev
        c += i * g
        tanh_c = torch.tanh(c.to_mkldnn()).to_dense() if fused else c.tanh()
        return tanh_c.mul_(o), c

    def _cached_pack(self, k: int, rows: int, kind: str) -> tuple[torch.Tensor, ...] | None:
        """The packed weights of layer ``k`` for ``rows`` rows (``kind``: "joint", oneDNN's
        [W_ih | W_hh] for the one-frame cell; "split", W_ih and W_hh apart for ``_cell_loop``),
        cached on the parameters' versions; None where oneDNN cannot pack them."""
        weights = self._layer_weights(k)
        key = (k, rows, kind, weights[0].data_ptr(), *(w._version for w in weights))
        cache = self.__dict__.setdefault("_packed", {})
        entry = cache.get(key)
        if entry is None:
            pack = _pack_lstm_layer if kind == "joint" else _pack_lstm_split
            entry = pack(*weights, rows)
            if entry is None:
                return None
            if len(cache) > 16:
                cache.clear()
            cache[key] = entry
        return entry

    def _cell_loop(
        self, x: torch.Tensor, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """A short LSTM sequence ``x [B, T, input]`` on the cell kernels, layer by layer as the
        sequence kernel runs it: the input projections of all T frames in one GEMM, then each
        frame reads only the recurrent weights (packs cached, see ``_pack_lstm_split``).
        """
        rows, num_frames, _ = x.shape
        if state is None:
            state = self.zero_state(rows, x.device)
        inputs = x.transpose(0, 1).reshape(num_frames * rows, -1)  # frame-major rows
        new_h, new_c = [], []
        for k in range(self.num_layers):
            packed_ih, bias, w_hh = self._cached_pack(k, rows, "split")
            projected = _packed_linear(inputs, packed_ih, bias).reshape(num_frames, rows, -1)
            frame_cell = _many_rows_cell if rows >= FUSED_ACTIVATION_ROWS else _few_rows_cell
            h, c = state[0][k], state[1][k]
            frames = []
            for t in range(num_frames):
                h, c = frame_cell(projected[t], h, c, w_hh)
                frames.append(h)
            inputs = torch.cat(frames)
            new_h.append(h)
            new_c.append(c)
        y = inputs.reshape(num_frames, rows, self.hidden_size).transpose(0, 1)
        if self.num_layers == 1:  # views, not copies
            return y, (new_h[0][None], new_c[0][None])
        return y, (torch.stack(new_h), torch.stack(new_c))

    def _step(
        self, x: torch.Tensor, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """One frame ``x [B, input]`` through the cell kernels."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        new_h, new_c = [], []
        for k in range(self.num_layers):
            if self.is_lstm:
                h_prev, c_prev = state[0][k], state[1][k]
                cell = self._packed_lstm_cell(k, x, h_prev, c_prev)
                # torch.lstm_cell is on autocast's low-precision list: its GEMMs and fused
                # pointwise kernel then run in bf16/fp16, which is what a GPU server wants.
                h, c = cell or torch.lstm_cell(x, (h_prev, c_prev), *self._layer_weights(k))
                new_c.append(c)
            else:
                h = torch.gru_cell(x, state[k], *self._layer_weights(k))
            new_h.append(h)
            x = h
        # One layer (every full-band stack): a view, not a copy.
        h_all = new_h[0][None] if len(new_h) == 1 else torch.stack(new_h)
        if not self.is_lstm:
            return x, h_all
        return x, (h_all, new_c[0][None] if len(new_c) == 1 else torch.stack(new_c))

    def _cells_are_faster(self, x: torch.Tensor) -> bool:
        """Whether a short sequence ``x [B, T, input]`` runs faster frame by frame on packed
        cells than through oneDNN's sequence kernel, which re-packs every weight on each call
        (about 1 ms for a 512-wide layer): few frames, CPU inference."""
        return (
            x.shape[1] < CELL_LOOP_FRAMES
            and x.device.type == "cpu"
            and self.is_lstm
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
        )

    def _takes_fused_kernels(self, x: torch.Tensor) -> bool:
        """Whether ``x [B, T, input]`` runs on fsnet.fused_lstm (see ``training_kernel``)."""
        if not self.is_lstm or not torch.is_grad_enabled() or x.shape[1] < 2:
            return False
        if self.training_kernel == "fused":
            return True
        return (
            self.training_kernel == "auto"
            and x.is_cuda
            and x.shape[0] >= FUSED_TRAINING_ROWS
            and fused_lstm.kernels_available()
        )

    def _fused_sequence(
        self, x: torch.Tensor, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``x [B, T, input]`` through every layer on fsnet.fused_lstm's kernels."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        weights = [self._layer_weights(k) for k in range(self.num_layers)]
        y, h, c = fused_lstm.lstm_layers(x, state[0], state[1], weights)
        return y, (h, c)

    def forward(
        self, x: torch.Tensor, state: RecurrentState | None = None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``x [B, T, input]`` -> ``(y [B, T, output or hidden], state)``."""
        # Quantized RNN modules (fsnet.quantize) keep their weights packed: they run the
        # sequence kernel even for one frame.
        unpacked = "weight_ih_l0" in self.rnn._parameters
        one_frame = x.shape[1] == 1 and unpacked
        if one_frame:  # the projection too runs on [B, H]: one reshape fewer each way
            y, state = self._step(x[:, 0], state)
        elif unpacked and self._cells_are_faster(x) and self._cached_pack(0, x.shape[0], "split"):
            y, state = self._cell_loop(x, state)
        elif unpacked and self._takes_fused_kernels(x):
            y, state = self._fused_sequence(x, state)
        else:
            y, state = self.rnn(x, state)
        if self.proj is not None:
            y = self.proj(y)
        if self.relu_output:
            y = torch.relu(y)
        return (y[:, None] if one_frame else y), state


def _pack_lstm_layer(
    w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, rows: int
) -> tuple[torch.Tensor, ...] | None:
    """One LSTM layer's joint [W_ih | W_hh], gates (i, f, o, g), for ``rows`` input rows.

    ``(weight transposed, bias)`` for MKL below ``FUSED_ACTIVATION_ROWS``, else oneDNN packs
    ``(packed_ifo, bias_ifo, packed_g, bias_g)`` for the fused-activation cell; None where oneDNN
    cannot run them.
    """
    hidden = w_hh.shape[1]
    i, f, g, o = (torch.arange(n * hidden, (n + 1) * hidden) for n in range(4))
    order = torch.cat((i, f, o, g))
    weight = torch.cat((w_ih, w_hh), 1)[order]
    bias = (b_ih + b_hh)[order]
    reorder = torch.ops.mkldnn._reorder_linear_weight
    try:
        if rows < FUSED_ACTIVATION_ROWS:
            return weight.t().contiguous(), bias
        packs = []
        for block in (slice(0, 3 * hidden), slice(3 * hidden, None)):
            packs += [reorder(weight[block].contiguous(), rows), bias[block].contiguous()]
        torch.tanh(torch.zeros(1, 1).to_mkldnn()).to_dense()  # oneDNN tensors work here
        return tuple(packs)
    except (RuntimeError, AttributeError):
        return None


def _pack_lstm_split(
    w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor, rows: int
) -> tuple[torch.Tensor, ...] | None:
    """``(packed w_ih, bias, w_hh)`` of one LSTM layer for ``_cell_loop``, gates in the order
    (i, f, o, g); None where oneDNN cannot pack.

    The input projection of a few frames runs on oneDNN's pack (2x MKL's sgemm on 4 frames of a
    512-wide layer). The per-frame recurrent GEMM does too on many rows (2x on the sub-band
    model's 64 bands); on a few rows it runs on MKL with ``w_hh`` transposed once, which reads a
    weight faster than oneDNN and costs ~1 us per call against oneDNN's ~15 us. On many rows
    the g rows are doubled (exact in floating point) for ``_many_rows_cell``'s tanh.
    """
    hidden = w_hh.shape[1]
    order = torch.cat([torch.arange(n * hidden, (n + 1) * hidden) for n in (0, 1, 3, 2)])
    many_rows = rows >= FUSED_ACTIVATION_ROWS
    scale = torch.ones(4 * hidden, 1)
    if many_rows:
        scale[3 * hidden :] = 2.0
    w_ih, w_hh, bias = w_ih[order] * scale, w_hh[order] * scale, (b_ih + b_hh)[order] * scale[:, 0]
    reorder = torch.ops.mkldnn._reorder_linear_weight
    try:
        w_hh = reorder(w_hh, rows) if many_rows else w_hh.t().contiguous()
        return reorder(w_ih, 4 * rows), bias, w_hh
    except (RuntimeError, AttributeError):  # a build without oneDNN
        return None


def _packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x [N, in]`` times a oneDNN-packed weight (``_pack_lstm_split``) plus ``bias``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _few_rows_cell(
    projected: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM frame from its input projection ``[B, 4H]`` (gates i, f, o, g) -> ``(h, c)``."""
    gates = torch.addmm(projected, h, w_hh_t)
    hidden = h.shape[1]
    gates[:, : 3 * hidden].sigmoid_()
    i, f, o, g = gates.chunk(4, 1)
    c = f * c
    c += i * g.tanh_()
    return c.tanh().mul_(o), c


def _many_rows_cell(
    projected: torch.Tensor, h: torch.Tensor, c: torch.Tensor, packed_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_few_rows_cell`` for many rows, with each tanh taken as 2 sigmoid(2x) - 1: ATen's
    sigmoid is ~10x faster per element than its tanh (AVX-512: 0.25 vs 2.2 ns), which matters
    on the sub-band model's 64 bands; within ~1e-7 absolute of tanh. The g rows of the weights
    come doubled (``_pack_lstm_split``), so one sigmoid call covers all four gates; the other
    doublings add a tensor to itself (a Python scalar operand costs a conversion per call)."""
    gates = _packed_linear(h, packed_hh, None)
    gates += projected
    i, f, o, sig_g = gates.sigmoid_().chunk(4, 1)
    i_tanh_g = i * sig_g
    i_tanh_g += i_tanh_g
    i_tanh_g -= i  # i (2 sigmoid(2g) - 1)
    c = f * c
    c += i_tanh_g
    h = (c + c).sigmoid_().mul_(o)
    h += h
    return h.sub_(o), c  # o (2 sigmoid(2c) - 1)
