"""fsnet: train Fast FullSubNet speech enhancement and run it frame by frame in real time."""

from fsnet.checkpoint import load_model, save_release
from fsnet.config import ModelConfig
from fsnet.enhance import enhance
from fsnet.errors import FsnetError
from fsnet.model import FastFullSubNet, build_model
from fsnet.streaming import StreamingEnhancer

__version__ = "0.1.0"
__all__ = [
    "FastFullSubNet",
    "FsnetError",
    "ModelConfig",
    "StreamingEnhancer",
    "build_model",
    "enhance",
    "load_model",
    "save_release",
]
