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

    def _zero_state(self, batch: int, like: torch.Tensor) -> RecurrentState:
        h = like.new_zeros(self.num_layers, batch, self.hidden_size)
        return (h, h.clone()) if self.is_lstm else h

    def _step(self, x: torch.Tensor, state: RecurrentState | None) -> tuple[torch.Tensor, RecurrentState]:
        """One frame ``x [B, input]`` through the cell kernels."""
        if state is None:
            state = self._zero_state(x.shape[0], x)
        rnn = self.rnn
        new_h, new_c = [], []
        for k in range(self.num_layers):
            weights = (
                getattr(rnn, f"weight_ih_l{k}"),
                getattr(rnn, f"weight_hh_l{k}"),
                getattr(rnn, f"bias_ih_l{k}"),
                getattr(rnn, f"bias_hh_l{k}"),
            )
            if self.is_lstm:
                h, c = torch.lstm_cell(x, (state[0][k], state[1][k]), *weights)
                new_c.append(c)
            else:
                h = torch.gru_cell(x, state[k], *weights)
            new_h.append(h)
            x = h
        h_all = torch.stack(new_h)
        return x, ((h_all, torch.stack(new_c)) if self.is_lstm else h_all)

    def forward(
        self, x: torch.Tensor, state: RecurrentState | None = None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """``x [B, T, input]`` -> ``(y [B, T, output or hidden], state)``."""
        if x.shape[1] == 1 and not torch.is_autocast_enabled(x.device.type):
            y, state = self._step(x[:, 0], state)
            y = y[:, None]
        else:
            y, state = self.rnn(x, state)
        if self.proj is not None:
            y = self.proj(y)
        if self.relu_output:
            y = torch.relu(y)
        return y, state
