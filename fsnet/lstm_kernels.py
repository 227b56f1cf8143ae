"""Triton kernels of fsnet.fused_lstm's gate arithmetic (imported on first CUDA use).

Each program takes ``POINTWISE_BLOCK`` elements of a step's ``[rows, hidden]`` cell; a row's
four gates lie ``hidden`` apart in its ``4 * hidden`` gate row (nn.LSTM's order i, f, g, o).
fsnet.fused_lstm's ``forward_cell_torch`` / ``backward_cell_torch`` are the same arithmetic.
"""

import triton
import triton.language as tl

POINTWISE_BLOCK = 1024  # elements of the [rows, hidden] cell per program


@triton.jit
def _tanh_tl(x):
    # tanh from the sigmoid: the interpreter and every backend have tl.sigmoid
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _forward_cell_kernel(
    gates_ptr, c_prev_ptr, h_ptr, c_ptr, n_elements, hidden, BLOCK: tl.constexpr
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row = offsets // hidden
    gate = gates_ptr + row * (4 * hidden) + offsets % hidden
    i = tl.sigmoid(tl.load(gate, mask=mask).to(tl.float32))
    f = tl.sigmoid(tl.load(gate + hidden, mask=mask).to(tl.float32))
    g = _tanh_tl(tl.load(gate + 2 * hidden, mask=mask).to(tl.float32))
    o = tl.sigmoid(tl.load(gate + 3 * hidden, mask=mask).to(tl.float32))
    c = f * tl.load(c_prev_ptr + offsets, mask=mask) + i * g
    tl.store(c_ptr + offsets, c, mask=mask)
    h = o * _tanh_tl(c)
    tl.store(h_ptr + offsets, h.to(h_ptr.dtype.element_ty), mask=mask)
    dtype = gates_ptr.dtype.element_ty
    tl.store(gate, i.to(dtype), mask=mask)
    tl.store(gate + hidden, f.to(dtype), mask=mask)
    tl.store(gate + 2 * hidden, g.to(dtype), mask=mask)
    tl.store(gate + 3 * hidden, o.to(dtype), mask=mask)


@triton.jit
def _backward_cell_kernel(
    act_ptr, c_ptr, c_prev_ptr, dh_ptr, dc_ptr, n_elements, hidden, BLOCK: tl.constexpr
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    row = offsets // hidden
    gate = act_ptr + row * (4 * hidden) + offsets % hidden
    i = tl.load(gate, mask=mask).to(tl.float32)
    f = tl.load(gate + hidden, mask=mask).to(tl.float32)
    g = tl.load(gate + 2 * hidden, mask=mask).to(tl.float32)
    o = tl.load(gate + 3 * hidden, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + offsets, mask=mask)
    c_prev = tl.load(c_prev_ptr + offsets, mask=mask)
    dh = tl.load(dh_ptr + offsets, mask=mask).to(tl.float32)
    tanh_c = _tanh_tl(c)
    dc = tl.load(dc_ptr + offsets, mask=mask) + dh * o * (1.0 - tanh_c * tanh_c)
    dtype = act_ptr.dtype.element_ty
    tl.store(gate, (dc * g * i * (1.0 - i)).to(dtype), mask=mask)
    tl.store(gate + hidden, (dc * c_prev * f * (1.0 - f)).to(dtype), mask=mask)
    tl.store(gate + 2 * hidden, (dc * i * (1.0 - g * g)).to(dtype), mask=mask)
    tl.store(gate + 3 * hidden, (dh * tanh_c * o * (1.0 - o)).to(dtype), mask=mask)
    tl.store(dc_ptr + offsets, dc * f, mask=mask)


def forward_cell(gates, c_prev, h_out, c_out) -> None:
    n = c_prev.numel()
    grid = (triton.cdiv(n, POINTWISE_BLOCK),)
    _forward_cell_kernel[grid](
        gates, c_prev, h_out, c_out, n, c_prev.shape[1], BLOCK=POINTWISE_BLOCK
    )


def backward_cell(act, c, c_prev, dh, dc) -> None:
    n = c.numel()
    grid = (triton.cdiv(n, POINTWISE_BLOCK),)
    _backward_cell_kernel[grid](act, c, c_prev, dh, dc, n, c.shape[1], BLOCK=POINTWISE_BLOCK)
