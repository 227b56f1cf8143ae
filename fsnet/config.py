"""Hyper-parameters of Fast FullSubNet as a plain dataclass (no Lightning, no Hydra)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsnet.errors import FsnetError


@dataclass
class ModelConfig:
    """Every size of the network and of its front end.

    Defaults follow the official Fast FullSubNet recipe (Audio-WestlakeU/FullSubNet,
    ``recipes/dns_interspeech_2020/fast_fullsubnet``), which the paper's results come from.
    """

    sample_rate: int = 16000  # Hz; the model only ever sees this rate
    n_fft: int = 512  # samples; FFT size and Hann window length (32 ms)
    hop_samples: int = 256  # samples between frames (16 ms)
    num_mels: int = 64  # mel bands of the full-band / sub-band fusion
    # F_l2m: full-band recurrent layers, linear spectrum (as mel) -> mel-domain representation;
    # the last layer projects to num_mels with a ReLU.
    encoder_hidden_sizes: tuple[int, ...] = (384, 257)
    # S: sub-band recurrent model shared by all mel bands, run at 1/shrink_size of the frame rate.
    bottleneck_hidden_size: int = 384
    bottleneck_num_layers: int = 2
    # F_m2l: full-band recurrent layers, mel -> complex ratio mask on the linear spectrum.
    decoder_hidden_sizes: tuple[int, ...] = (512, 512)
    noisy_num_neighbors: int = 5  # mel bands each side of a sub-band unit, from the noisy input
    encoder_output_num_neighbors: int = 0  # mel bands each side, from the F_l2m output
    shrink_size: int = 2  # frames averaged into one sub-band model step
    look_ahead: int = 2  # future frames the mask of a frame may see
    rnn_type: str = "LSTM"  # "LSTM" or "GRU"
    norm_eps: float = 1.1920928955078125e-07  # float32 eps, as the original cumulative norm

    @property
    def num_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def subband_unit_size(self) -> int:
        return (2 * self.noisy_num_neighbors + 1) + (2 * self.encoder_output_num_neighbors + 1)

    def runs_subband(self, frame_index: int) -> bool:
        """Whether the sub-band model steps at frame ``frame_index`` (0, then every shrink_size-th)."""
        return frame_index % self.shrink_size == 0

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: the window's overlap plus the look-ahead frames.

        The sub-band block adds none: a block is averaged over frames that have already arrived
        and its output is only used by the frames that follow it.
        """
        return self.n_fft - self.hop_samples + self.look_ahead * self.hop_samples

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    def __post_init__(self) -> None:
        # Values come from the command line and from files: check their types first, so that a
        # typo is one clear line rather than an arithmetic error further down.
        problems = self._coerce_types()
        if problems:
            raise FsnetError("invalid model config: " + "; ".join(problems))
        if self.rnn_type not in ("LSTM", "GRU"):
            problems.append(f"rnn_type must be LSTM or GRU, got {self.rnn_type!r}")
        for name in ("sample_rate", "n_fft", "hop_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise FsnetError("invalid model config: " + "; ".join(problems))
        if self.n_fft % self.hop_samples:
            problems.append(
                f"n_fft ({self.n_fft}) must be a multiple of hop_samples ({self.hop_samples})"
            )
        if self.hop_samples >= self.n_fft:
            problems.append("hop_samples must be smaller than n_fft (frames must overlap)")
        if not self.encoder_hidden_sizes or not self.decoder_hidden_sizes:
            problems.append("encoder_hidden_sizes and decoder_hidden_sizes need at least one layer")
        for name in ("num_mels", "shrink_size", "bottleneck_num_layers", "bottleneck_hidden_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("look_ahead", "noisy_num_neighbors", "encoder_output_num_neighbors"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if (
            self.noisy_num_neighbors >= self.num_mels
            or self.encoder_output_num_neighbors >= self.num_mels
        ):
            problems.append("neighbour counts must be smaller than num_mels")
        if problems:
            raise FsnetError("invalid model config: " + "; ".join(problems))

    def _coerce_types(self) -> list[str]:
        """Turn each field into its declared type in place; the fields that cannot be, as text."""
        problems = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            try:
                if kind.startswith("tuple"):
                    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                        raise TypeError
                    value = tuple(_whole(h) for h in value)
                elif kind == "int":
                    value = _whole(value)
                elif kind == "float":
                    value = float(value)
                    if not math.isfinite(value):
                        raise ValueError
                elif kind == "str" and not isinstance(value, str):
                    raise TypeError
            except (TypeError, ValueError):
                want = {"int": "a whole number", "float": "a finite number", "str": "text"}.get(
                    kind, "a list of whole numbers"
                )
                problems.append(f"{f.name} must be {want}, got {value!r}")
                continue
            setattr(self, f.name, value)
        return problems

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ModelConfig:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FsnetError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_hidden_sizes"] = list(self.encoder_hidden_sizes)
        d["decoder_hidden_sizes"] = list(self.decoder_hidden_sizes)
        return d


def _whole(value: Any) -> int:
    """``value`` as an int if it is a whole number (3, 3.0, "3"); TypeError/ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def as_config(cfg: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
    """Accept a ModelConfig, a plain/Hydra mapping of overrides, or None (defaults)."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if cfg is not None and not isinstance(cfg, Mapping):
        try:  # OmegaConf DictConfig without importing omegaconf here
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as exc:  # noqa: BLE001
            raise FsnetError(f"cannot read model config of type {type(cfg).__name__}") from exc
    return ModelConfig.from_dict(cfg)
