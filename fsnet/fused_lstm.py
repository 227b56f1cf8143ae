"""An LSTM layer for training on many sequences at once on CUDA (the sub-band model's shape).

cuDNN runs the sub-band model's LSTMs (64 bands x batch rows, a few hundred units, ~100 steps) far
below the GPU's matrix rate: each step's gate arithmetic makes several passes over the gates in
memory. Here a step is one GEMM that adds ``h @ W_hh^T`` into the precomputed input projections in
place, then one Triton kernel that applies the gates and updates the cell (the gates' activations
overwrite them, kept for the backward pass, which reuses the same buffer for the gate gradients).
The backward pass mirrors it: one kernel and one GEMM per step, then the weight gradients of all
steps as three large GEMMs.

The parameters are ``nn.LSTM``'s own tensors, so checkpoints, streaming and export do not change.
The cell state and the gate arithmetic are float32; the GEMMs, the hidden state and the saved
activations run in the autocast dtype (bf16 in training). On CPU the same function runs with the
gate arithmetic in plain torch: that is the reference the tests hold the kernels to.
"""

from __future__ import annotations

import importlib.util

import torch


def forward_cell_torch(
    gates: torch.Tensor, c_prev: torch.Tensor, h_out: torch.Tensor, c_out: torch.Tensor
) -> None:
    """Reference gate arithmetic of one step, in place: ``gates [R, 4H]`` (pre-activation, gate
    order i, f, g, o) become their activations; ``h_out [R, H]`` and ``c_out [R, H]`` (float32)
    are written; ``c_prev [R, H]`` float32."""
    pre = gates.float()
    hidden = c_prev.shape[1]
    i, f, o = (pre[:, k * hidden : (k + 1) * hidden].sigmoid() for k in (0, 1, 3))
    g = pre[:, 2 * hidden : 3 * hidden].tanh()
    c = f * c_prev + i * g
    c_out.copy_(c)
    h_out.copy_(o * c.tanh())
    gates.copy_(torch.cat((i, f, g, o), dim=1))


def backward_cell_torch(
    act: torch.Tensor, c: torch.Tensor, c_prev: torch.Tensor, dh: torch.Tensor, dc: torch.Tensor
) -> None:
    """Reference gradient of one step, in place: the activations ``act [R, 4H]`` become the
    gradients of the pre-activation gates; ``dc [R, H]`` (float32) goes from the gradient on
    ``c`` (from later steps) to the gradient on ``c_prev``. ``dh [R, H]``: the whole gradient on
    this step's ``h``."""
    a = act.float()
    hidden = c.shape[1]
    i, f, g, o = (a[:, k * hidden : (k + 1) * hidden] for k in range(4))
    dh = dh.float()
    tanh_c = c.tanh()
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    grads = (
        dc_total * g * i * (1 - i),
        dc_total * c_prev * f * (1 - f),
        dc_total * i * (1 - g * g),
        dh * tanh_c * o * (1 - o),
    )
    dc.copy_(dc_total * f)  # before ``act`` is overwritten: ``f`` may be a view of it
    act.copy_(torch.cat(grads, dim=1))


def kernels_available() -> bool:
    """Whether Triton is installed (the CUDA path's kernels need it)."""
    return importlib.util.find_spec("triton") is not None


def forward_cell(gates, c_prev, h_out, c_out) -> None:
    """``forward_cell_torch``'s arithmetic: a Triton kernel on CUDA."""
    if not gates.is_cuda:
        return forward_cell_torch(gates, c_prev, h_out, c_out)
    from fsnet import lstm_kernels

    lstm_kernels.forward_cell(gates, c_prev, h_out, c_out)


def backward_cell(act, c, c_prev, dh, dc) -> None:
    """``backward_cell_torch``'s arithmetic: a Triton kernel on CUDA."""
    if not act.is_cuda:
        return backward_cell_torch(act, c, c_prev, dh, dc)
    from fsnet import lstm_kernels

    lstm_kernels.backward_cell(act, c, c_prev, dh, dc)


class _LSTMLayer(torch.autograd.Function):
    """One LSTM layer over time-major ``x [T, R, I]`` from ``(h0, c0)``, each ``[R, H]``."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, bias):
        num_steps, rows, _ = x.shape
        hidden = w_hh.shape[1]
        # The input projections of every step in one GEMM; each step then adds its recurrent
        # part in place, and the gate kernel turns the sums into activations.
        gates = torch.addmm(bias, x.reshape(num_steps * rows, -1), w_ih.t())
        gates = gates.view(num_steps, rows, 4 * hidden)
        y = x.new_empty(num_steps, rows, hidden)
        cells = torch.empty(num_steps + 1, rows, hidden, device=x.device, dtype=torch.float32)
        cells[0] = c0
        h = h0
        w_hh_t = w_hh.t()
        for t in range(num_steps):
            gates[t].addmm_(h, w_hh_t)
            forward_cell(gates[t], cells[t], y[t], cells[t + 1])
            h = y[t]
        ctx.save_for_backward(x, h0, w_ih, w_hh, gates, cells, y)
        return y, cells[-1].clone()

    @staticmethod
    def backward(ctx, dy, dc_last):
        x, h0, w_ih, w_hh, gates, cells, y = ctx.saved_tensors
        num_steps, rows, hidden = y.shape
        # Our own copy: each step adds the recurrent gradient into the previous step's rows
        # in place (addmm into a fresh tensor would first copy them there).
        dh_all = (
            torch.zeros_like(y) if dy is None else dy.clone(memory_format=torch.contiguous_format)
        )
        dc = dc_last.float().clone() if dc_last is not None else cells.new_zeros(rows, hidden)
        for t in range(num_steps - 1, -1, -1):
            backward_cell(gates[t], cells[t + 1], cells[t], dh_all[t], dc)  # gates: now dgates
            if t:
                dh_all[t - 1].addmm_(gates[t], w_hh)
        dgates = gates.view(num_steps * rows, 4 * hidden)
        dh0 = gates[0] @ w_hh
        dx = (dgates @ w_ih).view(num_steps, rows, -1)
        dw_ih = dgates.t() @ x.reshape(num_steps * rows, -1)
        dw_hh = gates[0].t() @ h0
        if num_steps > 1:
            dw_hh = dw_hh.addmm_(gates[1:].reshape(-1, 4 * hidden).t(), y[:-1].reshape(-1, hidden))
        dbias = dgates.sum(0, dtype=torch.float32)
        return dx, dh0, dc, dw_ih, dw_hh, dbias


def lstm_layers(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    weights: list[tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``nn.LSTM``'s arithmetic on batch-first ``x [R, T, I]`` from ``h0, c0 [L, R, H]``, layer k
    with ``weights[k] = (w_ih, w_hh, b_ih, b_hh)`` -> ``(y [R, T, H], h_T, c_T [L, R, H])``;
    gradients flow to every argument.

    Under autocast the GEMMs and ``y`` run in the autocast dtype, the cell state in float32.
    Between layers the sequence stays time-major (one transpose in, one out).
    """
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    h_last, c_last = [], []
    with torch.autocast(x.device.type, enabled=False):
        y = x.transpose(0, 1).to(dtype).contiguous()
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
            y, c = _LSTMLayer.apply(
                y,
                h0[k].to(dtype),
                c0[k].float(),
                w_ih.to(dtype),
                w_hh.to(dtype),
                (b_ih + b_hh).to(dtype),
            )
            h_last.append(y[-1])
            c_last.append(c)
    return y.transpose(0, 1), torch.stack(h_last), torch.stack(c_last)
