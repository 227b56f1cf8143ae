"""Recurrent building block shared by the offline model and the streaming engine."""

from __future__ import annotations

import torch
from torch import nn

RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h; LSTM: (h, c), [L, B, H]


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
        self.num_layers = num_layers
        self.hidden_size = hidden_size

    def zero_state(self, batch: int, device: torch.device | str | None = None) -> RecurrentState:
        """All-zero state for ``batch`` sequences (what nn.LSTM assumes when given None)."""
        h = torch.zeros(self.num_layers, batch, self.hidden_size, device=device)
        return (h, h.clone()) if self.is_lstm else h

    def _layer_weights(self, k: int) -> tuple[torch.Tensor, ...]:
        rnn = self.rnn
        return tuple(
            getattr(rnn, f"{name}_l{k}")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )

    def _packed_lstm_gates(self, k: int, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor | None:
        """LSTM gates ``[B, 4H]`` through oneDNN with [W_ih | W_hh] packed once (CPU inference).

        MKL's sgemm falls far behind oneDNN's packed kernels on batched frames (2x on AVX-512
        machines), and at batch 1 the packed GEMV still reads the weights faster (a streaming
        hop: 3.4 -> 2.7 ms, benchmarks/cpu_hop_breakdown.py). The pack is a cache keyed on the
        parameters' versions, so an optimiser step invalidates it. Grad mode (training, ONNX
        export) never takes this path. Returns None where the fast path does not apply.
        """
        if (
            torch.is_grad_enabled()
            or x.device.type != "cpu"
            or not self.is_lstm
            or torch.is_autocast_enabled("cpu")
        ):
            return None
        w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
        key = (
            k,
            x.shape[0],
            w_ih._version,
            w_hh._version,
            b_ih._version,
            b_hh._version,
            w_ih.data_ptr(),
        )
        cache = self.__dict__.setdefault("_packed", {})
        if key not in cache:
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(
                    torch.cat((w_ih, w_hh), 1), x.shape[0]
                )
            except (RuntimeError, AttributeError):
                return None
            if len(cache) > 16:
                cache.clear()
            cache[key] = (packed, b_ih + b_hh)
        packed, bias = cache[key]
        return torch.ops.mkldnn._linear_pointwise(
            torch.cat((x, h), 1), packed, bias, "none", [], ""
        )

    def _step(
        self, x: torch.Tensor, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """One frame ``x [B, input]`` through the cell kernels."""
        if state is None:
            state = self.zero_state(x.shape[0], x.device)
        new_h, new_c = [], []
        for k in range(self.num_layers):
            if self.is_lstm:
                # torch.lstm_cell is on autocast's low-precision list: its GEMMs and fused
                # pointwise kernel then run in bf16/fp16, which is what a GPU server wants.
                gates = self._packed_lstm_gates(k, x, state[0][k])
                if gates is None:
                    h, c = torch.lstm_cell(x, (state[0][k], state[1][k]), *self._layer_weights(k))
                else:
                    i, f, g, o = gates.chunk(4, 1)
                    c = torch.sigmoid(f) * state[1][k] + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            else:
                h = torch.gru_cell(x, state[k], *self._layer_weights(k))
            new_h.append(h)
            x = h
        h_all = torch.stack(new_h)
        return x, ((h_all, torch.stack(new_c)) if self.is_lstm else h_all)

    def forward(
        self, x: torch.Tensor, state: RecurrentState | None = None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``x [B, T, input]`` -> ``(y [B, T, output or hidden], state)``."""
        # Quantized RNN modules (fsnet.quantize) keep their weights packed: they run the
        # sequence kernel even for one frame.
        if x.shape[1] == 1 and hasattr(self.rnn, "weight_ih_l0"):
            y, state = self._step(x[:, 0], state)
            y = y[:, None]
        else:
            y, state = self.rnn(x, state)
        if self.proj is not None:
            y = self.proj(y)
        if self.relu_output:
            y = torch.relu(y)
        return y, state
