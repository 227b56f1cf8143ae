"""fsnet: train Fast FullSubNet speech enhancement and run it frame by frame in real time."""

from fsnet.interrupts import interrupts_held

# importing torch: a Ctrl-C (or SIGTERM) meanwhile is raised after it (see fsnet.interrupts)
with interrupts_held():
    from fsnet.config import ModelConfig
    from fsnet.enhance import enhance
    from fsnet.errors import FsnetError
    from fsnet.frontend import MaskShaping
    from fsnet.model import FastFullSubNet, build_model
    from fsnet.streaming import StreamingEnhancer

__version__ = "0.1.0"


def __getattr__(name: str):
    # fsnet.checkpoint is imported on first use, so that `python -m fsnet.checkpoint` (its CLI)
    # does not find itself already imported by the package.
    if name in ("load_model", "save_release"):
        from fsnet import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'fsnet' has no attribute {name!r}")


__all__ = [
    "FastFullSubNet",
    "FsnetError",
    "MaskShaping",
    "ModelConfig",
    "StreamingEnhancer",
    "build_model",
    "enhance",
    "load_model",
    "save_release",
]
