"""Triton kernels of fsnet.fused_lstm's gate arithmetic (imported on first CUDA use).

Each program takes ``POINTWISE_BLOCK`` elements of a step's ``[rows, hidden]`` cell; a row's
four gates lie ``hidden`` apart in its ``4 * hidden`` gate row (nn.LSTM's order i, f, g, o).
fsnet.fused_lstm's ``forward_cell_torch`` / ``backward_cell_torch`` are the same arithmetic.
"""

import torch
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


# ---------------------------------------------------------------- GEMM + gates in one kernel
# A program owns a [BLOCK_ROWS, BLOCK_HIDDEN] tile of the cell: it computes the four gates' GEMM
# tiles for it (four accumulators over the same rows of h), then the cell update in registers, so
# the recurrent GEMM's output never goes through memory.
STEP_BLOCK_ROWS = 64
STEP_BLOCK_HIDDEN = 64
STEP_BLOCK_K = 32


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _forward_step_kernel(
    h_prev_ptr,
    w_hh_ptr,
    gates_ptr,
    c_prev_ptr,
    h_ptr,
    c_ptr,
    rows,
    hidden: tl.constexpr,  # a compile-time size: the K loop then has fixed bounds
    BM: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    IEEE: tl.constexpr,
):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rh = tl.program_id(1) * BH + tl.arange(0, BH)
    row_ok = rm < rows
    col_ok = rh < hidden
    acc_i = tl.zeros((BM, BH), dtype=tl.float32)
    acc_f = tl.zeros((BM, BH), dtype=tl.float32)
    acc_g = tl.zeros((BM, BH), dtype=tl.float32)
    acc_o = tl.zeros((BM, BH), dtype=tl.float32)
    for k in range(0, hidden, BK):
        rk = k + tl.arange(0, BK)
        k_ok = rk < hidden
        a = tl.load(
            h_prev_ptr + rm[:, None] * hidden + rk[None, :],
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        # W_hh is [4H, H]: the transposed tile of gate q holds rows q*H + rh, columns rk
        w = w_hh_ptr + rh[None, :] * hidden + rk[:, None]
        w_ok = k_ok[:, None] & col_ok[None, :]
        acc_i += _dot(a, tl.load(w, mask=w_ok, other=0.0), IEEE)
        acc_f += _dot(a, tl.load(w + hidden * hidden, mask=w_ok, other=0.0), IEEE)
        acc_g += _dot(a, tl.load(w + 2 * hidden * hidden, mask=w_ok, other=0.0), IEEE)
        acc_o += _dot(a, tl.load(w + 3 * hidden * hidden, mask=w_ok, other=0.0), IEEE)
    ok = row_ok[:, None] & col_ok[None, :]
    gate = gates_ptr + rm[:, None] * (4 * hidden) + rh[None, :]
    dtype = gates_ptr.dtype.element_ty
    # the sum is rounded to the gates' dtype first, as the unfused GEMM's output is
    i = tl.sigmoid((acc_i + tl.load(gate, mask=ok).to(tl.float32)).to(dtype).to(tl.float32))
    f = tl.sigmoid(
        (acc_f + tl.load(gate + hidden, mask=ok).to(tl.float32)).to(dtype).to(tl.float32)
    )
    g = _tanh_tl(
        (acc_g + tl.load(gate + 2 * hidden, mask=ok).to(tl.float32)).to(dtype).to(tl.float32)
    )
    o = tl.sigmoid(
        (acc_o + tl.load(gate + 3 * hidden, mask=ok).to(tl.float32)).to(dtype).to(tl.float32)
    )
    cell = rm[:, None] * hidden + rh[None, :]
    c = f * tl.load(c_prev_ptr + cell, mask=ok) + i * g
    tl.store(c_ptr + cell, c, mask=ok)
    tl.store(h_ptr + cell, (o * _tanh_tl(c)).to(h_ptr.dtype.element_ty), mask=ok)
    tl.store(gate, i.to(dtype), mask=ok)
    tl.store(gate + hidden, f.to(dtype), mask=ok)
    tl.store(gate + 2 * hidden, g.to(dtype), mask=ok)
    tl.store(gate + 3 * hidden, o.to(dtype), mask=ok)


@triton.jit
def _backward_step_kernel(
    dgates_next_ptr,
    w_hh_ptr,
    dy_ptr,
    act_ptr,
    c_ptr,
    c_prev_ptr,
    dc_ptr,
    rows,
    hidden: tl.constexpr,
    HAS_NEXT: tl.constexpr,
    BM: tl.constexpr,
    BH: tl.constexpr,
    BK: tl.constexpr,
    IEEE: tl.constexpr,
):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rh = tl.program_id(1) * BH + tl.arange(0, BH)
    row_ok = rm < rows
    col_ok = rh < hidden
    ok = row_ok[:, None] & col_ok[None, :]
    cell = rm[:, None] * hidden + rh[None, :]
    dh = tl.load(dy_ptr + cell, mask=ok, other=0.0).to(tl.float32)
    if HAS_NEXT:
        # dh += dgates_{t+1} [R, 4H] @ W_hh [4H, H], over the 4H gate rows
        acc = tl.zeros((BM, BH), dtype=tl.float32)
        for k in range(0, 4 * hidden, BK):
            rk = k + tl.arange(0, BK)
            k_ok = rk < 4 * hidden
            a = tl.load(
                dgates_next_ptr + rm[:, None] * (4 * hidden) + rk[None, :],
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            )
            w = tl.load(
                w_hh_ptr + rk[:, None] * hidden + rh[None, :],
                mask=k_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc += _dot(a, w, IEEE)
        dh += acc.to(dy_ptr.dtype.element_ty).to(tl.float32)
    gate = act_ptr + rm[:, None] * (4 * hidden) + rh[None, :]
    i = tl.load(gate, mask=ok).to(tl.float32)
    f = tl.load(gate + hidden, mask=ok).to(tl.float32)
    g = tl.load(gate + 2 * hidden, mask=ok).to(tl.float32)
    o = tl.load(gate + 3 * hidden, mask=ok).to(tl.float32)
    c = tl.load(c_ptr + cell, mask=ok)
    tanh_c = _tanh_tl(c)
    dc = tl.load(dc_ptr + cell, mask=ok) + dh * o * (1.0 - tanh_c * tanh_c)
    dtype = act_ptr.dtype.element_ty
    tl.store(gate, (dc * g * i * (1.0 - i)).to(dtype), mask=ok)
    tl.store(
        gate + hidden, (dc * tl.load(c_prev_ptr + cell, mask=ok) * f * (1.0 - f)).to(dtype), mask=ok
    )
    tl.store(gate + 2 * hidden, (dc * i * (1.0 - g * g)).to(dtype), mask=ok)
    tl.store(gate + 3 * hidden, (dh * tanh_c * o * (1.0 - o)).to(dtype), mask=ok)
    tl.store(dc_ptr + cell, dc * f, mask=ok)


def _step_grid(rows: int, hidden: int) -> tuple[int, int]:
    return (triton.cdiv(rows, STEP_BLOCK_ROWS), triton.cdiv(hidden, STEP_BLOCK_HIDDEN))


def forward_step(gates, h_prev, w_hh, c_prev, h_out, c_out) -> None:
    rows, hidden = c_prev.shape
    _forward_step_kernel[_step_grid(rows, hidden)](
        h_prev,
        w_hh,
        gates,
        c_prev,
        h_out,
        c_out,
        rows,
        hidden,
        BM=STEP_BLOCK_ROWS,
        BH=STEP_BLOCK_HIDDEN,
        BK=STEP_BLOCK_K,
        IEEE=gates.dtype == torch.float32,
    )


def backward_step(act, dgates_next, w_hh, dy, c, c_prev, dc) -> None:
    rows, hidden = c.shape
    _backward_step_kernel[_step_grid(rows, hidden)](
        act if dgates_next is None else dgates_next,
        w_hh,
        dy,
        act,
        c,
        c_prev,
        dc,
        rows,
        hidden,
        HAS_NEXT=dgates_next is not None,
        BM=STEP_BLOCK_ROWS,
        BH=STEP_BLOCK_HIDDEN,
        BK=STEP_BLOCK_K,
        IEEE=act.dtype == torch.float32,
    )
