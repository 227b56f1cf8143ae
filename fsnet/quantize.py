"""int8 dynamic quantization for the CPU streaming path.

Streaming at batch 1 reads every weight matrix once per hop; int8 weights read a quarter of
the bytes and use the VNNI int8 kernels (fbgemm/x86), so a hop costs about half as much. The
quantized model is the same FastFullSubNet with its LSTM and Linear submodules swapped for
PyTorch's dynamic-quantized ones: ``forward``, ``step`` and the streaming engine run unchanged.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from fsnet.model import FastFullSubNet


def quantize_int8(model: FastFullSubNet) -> FastFullSubNet:
    """A CPU copy of ``model`` with int8 weights (activations quantized on the fly, per call).

    The original model is left untouched. Measure quality on your data before shipping it:
    ``python evaluate.py precision=int8 testset=<dir>`` scores it next to the noisy input.
    """
    quantized = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantization prints a migration notice; it is still the supported
        # dynamic-int8 path for nn.LSTM in torch 2.11.
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            quantized, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return quantized
