"""fsnet.fused_lstm (the CUDA training path of the sub-band LSTMs) against nn.LSTM."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsnet.layers import RecurrentLayer

ROOT = Path(__file__).resolve().parents[1]


def _grads(layer: RecurrentLayer, x: torch.Tensor, state):
    """Outputs and gradients of ``layer(x, state)`` for fixed random output weights."""
    y, (h, c) = layer(x, state)
    # the same output weights on every device and dtype
    generator = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=generator).to(t)).sum() for t in (y, h, c))
    inputs = [x, *state, *layer.parameters()]
    return [y, h, c, *torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("num_layers,steps", [(1, 2), (2, 9), (2, 3)])
def test_fused_path_matches_nn_lstm_in_float32(num_layers, steps):
    torch.manual_seed(0)
    layer = RecurrentLayer(7, 24, num_layers=num_layers, output_size=3, relu_output=True)
    x = torch.randn(19, steps, 7, requires_grad=True)
    state = tuple(torch.randn(num_layers, 19, 24, requires_grad=True) for _ in range(2))
    layer.training_kernel = "cudnn"  # on CPU: nn.LSTM's own kernels
    reference = _grads(layer, x, state)
    layer.training_kernel = "fused"
    fused = _grads(layer, x, state)
    for want, got in zip(reference, fused, strict=True):
        scale = want.abs().max().clamp_min(1e-6)
        assert float((want - got).detach().abs().max() / scale) < 1e-5


def test_fused_path_is_left_for_inference_and_full_band_rows():
    layer = RecurrentLayer(4, 8)
    x = torch.randn(3, 5, 4)
    assert not layer._takes_fused_kernels(x)  # auto: CUDA training with many rows only
    layer.training_kernel = "fused"
    with torch.no_grad():
        assert not layer._takes_fused_kernels(x)
    assert layer._takes_fused_kernels(x)


def test_triton_kernels_equal_the_reference_arithmetic():
    """The Triton kernels, run by Triton's CPU interpreter, against forward/backward_cell_torch."""
    pytest.importorskip("triton")
    script = """
import torch
from fsnet import fused_lstm, lstm_kernels
torch.manual_seed(0)
rows, hidden = 37, 48
for dtype, tol in ((torch.float32, 1e-6), (torch.bfloat16, 2 ** -7)):
    gates = torch.randn(rows, 4 * hidden).to(dtype)
    c_prev, c_next, dh = torch.randn(rows, hidden), torch.randn(rows, hidden), torch.randn(rows, hidden)
    outs = []
    for cell in (fused_lstm.forward_cell_torch, lstm_kernels.forward_cell):
        g, h, c = gates.clone(), torch.empty(rows, hidden, dtype=dtype), torch.empty(rows, hidden)
        cell(g, c_prev, h, c)
        outs.append((g, h, c))
    for cell in (fused_lstm.backward_cell_torch, lstm_kernels.backward_cell):
        a, dc = outs[0][0].clone(), torch.randn(rows, hidden, generator=torch.Generator().manual_seed(2))
        cell(a, c_next, c_prev, dh.to(dtype), dc)
        outs.append((a, dc))
    for want, got in ((outs[0], outs[1]), (outs[2], outs[3])):
        for w, g in zip(want, got):
            err = float(((w.float() - g.float()).abs() / (1 + w.float().abs())).max())
            assert err <= tol, (dtype, err)
print("ok")
"""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _double_cpu(x, state):
    """Leaf float64 CPU copies of ``x`` and the state, for a float64 reference run."""
    leaf = lambda t: t.detach().double().cpu().requires_grad_()  # noqa: E731
    return leaf(x), tuple(leaf(t) for t in state)


def _relative_errors(reference, fused) -> list[float]:
    return [
        float((w.double().cpu() - g.double().cpu()).detach().abs().max() / w.double().abs().max())
        for w, g in zip(reference, fused, strict=True)
    ]


def _errors_against_float64(layer, x, state, kind: str, autocast: bool) -> list[float]:
    exact = _grads(copy.deepcopy(layer).double().cpu(), *_double_cpu(x, state))
    layer.training_kernel = kind
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        return _relative_errors(exact, _grads(layer, x, state))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_match_cudnn():
    """Against a float64 reference, the fused kernels are within 1e-5 (fp32; bf16: 3e-2) of each
    tensor's largest value, or no further from it than cuDNN's own result in the same dtype."""
    torch.manual_seed(0)
    layer = RecurrentLayer(12, 96, num_layers=2, output_size=1, relu_output=True).cuda()
    x = torch.randn(2048, 17, 12, device="cuda", requires_grad=True)
    state = tuple(torch.randn(2, 2048, 96, device="cuda", requires_grad=True) for _ in range(2))
    assert layer._takes_fused_kernels(x)
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for autocast, bound in ((False, 1e-5), (True, 3e-2)):
            cudnn = _errors_against_float64(layer, x, state, "cudnn", autocast)
            fused = _errors_against_float64(layer, x, state, "auto", autocast)
            for f, c in zip(fused, cudnn, strict=True):
                assert f < bound or f <= 1.5 * c, (autocast, fused, cudnn)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
            matmul_tf32,
            cudnn_tf32,
        )


def test_system_sets_the_training_kernel(tiny_model_config):
    from fsnet.errors import FsnetError
    from fsnet.system import EnhancementSystem

    system = EnhancementSystem(tiny_model_config, metric_workers=0, lstm_kernel="auto")
    kinds = {m.training_kernel for m in system.modules() if isinstance(m, RecurrentLayer)}
    assert kinds == {"auto"}
    with pytest.raises(FsnetError, match="system.lstm_kernel: LSTM training kernel must be one of"):
        EnhancementSystem(tiny_model_config, metric_workers=0, lstm_kernel="triton")
