"""Fast FullSubNet (Hao & Li, ICASSP 2023) with a causal cumulative norm.

The network is written as four stages that take sequences plus carried state
(``encode``, ``subband_units``, ``subband``, ``decode``). ``forward`` runs them over a whole
utterance, ``forward_chunk`` over any run of frames with carried state (so that a signal of any
length runs in bounded memory), ``step`` on one frame. ``forward`` and ``step`` are
``forward_chunk`` on a whole utterance and on one frame, and the streaming engine only ever calls
``forward_chunk``, so the model you train is the model you stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fsnet.config import ModelConfig, as_config
from fsnet.frontend import STFT, mel_filterbank
from fsnet.layers import RecurrentLayer
from fsnet.norm import cumulative_laplace_norm, utterance_laplace_norm


def _reflected_neighbours(num_bands: int, num_neighbors: int) -> torch.Tensor:
    """Index ``[num_bands, 2n + 1]`` of each band's neighbours, reflected at the edges."""
    offsets = torch.arange(-num_neighbors, num_neighbors + 1)
    index = torch.arange(num_bands)[:, None] + offsets[None, :]
    index = index.abs()  # reflect below band 0
    return torch.where(index > num_bands - 1, 2 * (num_bands - 1) - index, index)


def _stack(input_size: int, hidden_sizes, output_size: int, relu_output: bool, rnn_type: str):
    """Single-layer recurrent layers of the given widths; the last one projects to output_size."""
    layers = []
    for i, hidden in enumerate(hidden_sizes):
        last = i == len(hidden_sizes) - 1
        layers.append(
            RecurrentLayer(
                input_size,
                hidden,
                output_size=output_size if last else 0,
                relu_output=relu_output and last,
                rnn_type=rnn_type,
            )
        )
        input_size = hidden
    return nn.ModuleList(layers)


class FastFullSubNet(nn.Module):
    """Noisy magnitude ``[B, 1, F, T]`` -> compressed complex ratio mask ``[B, 2, F, T]``."""

    def __init__(
        self, config: ModelConfig | Mapping[str, Any] | None = None, norm: str = "cumulative"
    ):
        super().__init__()
        cfg = as_config(config)
        if norm not in ("cumulative", "utterance"):
            raise ValueError(f"norm must be 'cumulative' or 'utterance', got {norm!r}")
        self.config = cfg
        # 'utterance' reproduces checkpoints trained with FullSubNet's offline norm; not streamable.
        self.norm = norm
        num_mels, num_freqs = cfg.num_mels, cfg.num_freqs
        self.stft = STFT(cfg.n_fft, cfg.hop_samples)
        self.register_buffer(
            "mel_fb", mel_filterbank(num_freqs, num_mels, cfg.sample_rate), persistent=False
        )
        self.register_buffer(
            "noisy_neighbours",
            _reflected_neighbours(num_mels, cfg.noisy_num_neighbors),
            persistent=False,
        )
        self.register_buffer(
            "encoder_neighbours",
            _reflected_neighbours(num_mels, cfg.encoder_output_num_neighbors),
            persistent=False,
        )
        # Both neighbourhoods as one index into [mel | encoded], flattened [M * K] (one gather
        # per frame, not three ops)
        self.register_buffer(
            "unit_index",
            torch.cat((self.noisy_neighbours, self.encoder_neighbours + num_mels), dim=1).flatten(),
            persistent=False,
        )
        # F_l2m: full-band, mel in -> mel out (ReLU)
        self.encoder = _stack(num_mels, cfg.encoder_hidden_sizes, num_mels, True, cfg.rnn_type)
        # S: one sub-band model shared by every mel band
        self.bottleneck = RecurrentLayer(
            cfg.subband_unit_size,
            cfg.bottleneck_hidden_size,
            num_layers=cfg.bottleneck_num_layers,
            output_size=1,
            relu_output=True,
            rnn_type=cfg.rnn_type,
        )
        # F_m2l: full-band, [F_l2m output, S output] -> cRM (real part first, then imaginary)
        self.decoder = _stack(
            2 * num_mels, cfg.decoder_hidden_sizes, 2 * num_freqs, False, cfg.rnn_type
        )

    # ---------------------------------------------------------------- stages
    def init_state(self, batch_size: int | None = None, device=None) -> dict[str, Any]:
        """Carried state of ``step`` / the stages.

        Without ``batch_size`` every entry starts empty and is created on first use (whole
        sequences). With it, every tensor is allocated up front (zeros, on ``device``), so the
        state has a fixed layout that a captured CUDA graph can update in place.
        """
        state: dict[str, Any] = {
            "enc_norm": None,
            "enc": {},
            "sb_norm": None,
            "sb": None,
            "dec": {},
            "frames": 0,
        }
        if batch_size is None:
            return state
        cfg = self.config
        rows = batch_size * cfg.num_mels

        def norm_state(n):
            return (
                torch.zeros(n, dtype=torch.float64, device=device),
                torch.zeros((), dtype=torch.float64, device=device),
            )

        state["enc_norm"], state["sb_norm"] = norm_state(batch_size), norm_state(rows)
        state["enc"] = {
            i: layer.zero_state(batch_size, device) for i, layer in enumerate(self.encoder)
        }
        state["dec"] = {
            i: layer.zero_state(batch_size, device) for i, layer in enumerate(self.decoder)
        }
        state["sb"] = self.bottleneck.zero_state(rows, device)
        state["sb_acc"] = torch.zeros(
            batch_size, cfg.num_mels, cfg.subband_unit_size, 1, device=device
        )
        state["sb_out"] = torch.zeros(batch_size, cfg.num_mels, 1, device=device)
        return state

    def to_mel(self, mag: torch.Tensor) -> torch.Tensor:
        """Magnitude ``[B, F, T]`` -> mel magnitude ``[B, M, T]`` (float32 input; under autocast the
        product comes out in its dtype). One ``mm`` over the ``B * T`` frames: a quarter of
        ``einsum``'s cost on a streaming hop, and the result is ``[B, M, T]`` viewed from
        ``[B, T, M]``, the layout the encoder reads."""
        batch, num_freqs, num_frames = mag.shape
        rows = mag.float().transpose(1, 2).reshape(batch * num_frames, num_freqs)
        return torch.mm(rows, self.mel_fb).view(batch, num_frames, -1).transpose(1, 2)

    def encode(self, mel: torch.Tensor, state: dict) -> torch.Tensor:
        """F_l2m on ``mel [B, M, T]`` -> ``[B, M, T]``."""
        if self.norm == "cumulative":
            x, state["enc_norm"] = cumulative_laplace_norm(
                mel, state["enc_norm"], self.config.norm_eps
            )
        else:
            x = utterance_laplace_norm(mel)
        x = x.transpose(1, 2)
        for i, layer in enumerate(self.encoder):
            x, state["enc"][i] = layer(x, state["enc"].get(i))
        return x.transpose(1, 2)

    def subband_units(self, mel: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        """Each mel band with its neighbours: ``[B, M, T]`` x2 -> ``[B, M, K, T]``."""
        batch, num_mels, num_frames = mel.shape
        units = torch.cat((mel, encoded), dim=1).index_select(1, self.unit_index)
        return units.view(batch, num_mels, -1, num_frames)

    def subband(self, blocks: torch.Tensor, state: dict) -> torch.Tensor:
        """S on time-shrunk units ``[B, M, K, Tb]`` -> ``[B, M, Tb]``."""
        batch, num_mels, unit, num_blocks = blocks.shape
        if self.norm == "cumulative":
            x, state["sb_norm"] = cumulative_laplace_norm(
                blocks.reshape(batch * num_mels, unit, num_blocks),
                state["sb_norm"],
                self.config.norm_eps,
            )
        else:
            x = utterance_laplace_norm(blocks).reshape(batch * num_mels, unit, num_blocks)
        y, state["sb"] = self.bottleneck(x.transpose(1, 2), state["sb"])
        return y.reshape(batch, num_mels, num_blocks)

    def decode(self, encoded: torch.Tensor, subband_out: torch.Tensor, state: dict) -> torch.Tensor:
        """F_m2l on ``[B, M, T]`` x2 -> compressed cRM ``[B, 2, F, T]``."""
        x = torch.cat((encoded, subband_out.to(encoded.dtype)), dim=1).transpose(1, 2)
        for i, layer in enumerate(self.decoder):
            x, state["dec"][i] = layer(x, state["dec"].get(i))
        batch, num_frames, _ = x.shape
        return x.transpose(1, 2).reshape(batch, 2, self.config.num_freqs, num_frames)

    # ---------------------------------------------------------------- time shrinking
    def chunk_subband(self, units: torch.Tensor, state: dict, whole: bool = False) -> torch.Tensor:
        """S on the units ``[B, M, K, T]`` of the frames after ``state["frames"]`` -> the sub-band
        output each of those frames uses ``[B, M, T]``; carries the unfinished block in ``state``.

        Frame 0 is a block of its own (the look-back stops there); block k >= 1 averages frames
        ``(k - 1) s + 1 .. k s`` and is complete at frame ``k s``. Frame t uses block ``t // s``,
        which has always ended by then, so the shrink adds no latency, and a chunk may end
        anywhere: the frames of an unfinished block wait summed in ``state["sb_acc"]``.
        ``whole``: the chunk is a whole utterance; a trailing unfinished block also runs, averaged
        over its frames (no frame uses it, but the utterance norm's mean counts it).
        """
        s, first = self.config.shrink_size, state["frames"]
        num_frames = units.shape[-1]
        acc = state.get("sb_acc")
        head = (-first) % s + 1  # frames up to and including the next block end
        if num_frames < head:  # no block ends in this chunk
            state["sb_acc"] = units.sum(-1, keepdim=True) + (0 if acc is None else acc)
            return state["sb_out"].expand(*units.shape[:2], num_frames)
        first_sum = units[..., :head].sum(-1, keepdim=True)
        if acc is not None:
            first_sum = acc + first_sum
        rest = units[..., head:]
        num_full = rest.shape[-1] // s
        full = rest[..., : num_full * s].reshape(*rest.shape[:-1], num_full, s).sum(-1)
        left = rest[..., num_full * s :]
        blocks = [first_sum / (1 if first == 0 else s), full / s]
        if whole and left.shape[-1]:
            blocks.append(left.mean(-1, keepdim=True))
        out = self.subband(torch.cat(blocks, dim=-1), state)[..., : 1 + num_full]
        state["sb_acc"] = left.sum(-1, keepdim=True)
        previous = out[..., :1] if first == 0 else state["sb_out"]  # frame 0 never uses it
        state["sb_out"] = out[..., -1:]
        # Frame first + t uses the (count of block ends in first..first + t)-th entry.
        ends = torch.arange(first, first + num_frames, device=units.device) // s
        index = ends - (first - 1) // s
        return torch.cat((previous.to(out.dtype), out), dim=-1).index_select(-1, index)

    # ---------------------------------------------------------------- chunks of frames
    def forward_chunk(
        self, noisy_mag: torch.Tensor, state: dict, whole: bool = False
    ) -> torch.Tensor:
        """Frames ``[B, 1, F, T]`` that follow ``state`` -> the decoder's output for them
        ``[B, 2, F, T]``; ``state`` moves on by T frames.

        Output t is the mask of the frame ``look_ahead`` steps earlier: feed ``look_ahead`` zero
        frames at the end, as ``forward`` pads. Any split of a sequence into chunks gives the
        same outputs (to float rounding) as one chunk; memory grows with T, not with the stream.
        ``whole``: the chunk is a whole utterance (``forward``; see ``chunk_subband``).
        """
        if self.norm != "cumulative" and state["frames"]:
            raise ValueError("a model with utterance-level norm cannot run in chunks")
        first = state["frames"]
        mel = self.to_mel(noisy_mag[:, 0])
        encoded = self.encode(mel, state)
        units = self.subband_units(mel, encoded)
        if units.shape[-1] == 1:  # one frame: the cell kernels, CUDA-graph and ONNX safe
            self.step_subband(units, state, first, self.runs_subband(first))
            subband_out = state["sb_out"]
        else:
            subband_out = self.chunk_subband(units, state, whole)
        state["frames"] = first + units.shape[-1]
        return self.decode(encoded, subband_out, state)

    # ---------------------------------------------------------------- whole sequence
    def forward(self, noisy_mag: torch.Tensor) -> torch.Tensor:
        """Noisy magnitude ``[B, 1, F, T]`` -> compressed cRM ``[B, 2, F, T]`` for the same frames.

        The mask of frame t sees frames up to ``t + look_ahead`` (zeros past the end).
        """
        look_ahead = self.config.look_ahead
        padded = F.pad(noisy_mag, (0, look_ahead))
        mask = self.forward_chunk(padded, self.init_state(), whole=True)
        return mask[..., look_ahead:]

    # ---------------------------------------------------------------- one frame
    def step(self, noisy_mag: torch.Tensor, state: dict) -> torch.Tensor:
        """One frame ``[B, 1, F, 1]`` -> the decoder's output for it ``[B, 2, F, 1]``
        (``forward_chunk`` on one frame).

        That output is the mask of the frame ``look_ahead`` steps earlier; feed zero frames at
        the end of a stream to drain the look-ahead, as ``forward`` pads.
        """
        if self.norm != "cumulative":
            raise ValueError("a model with utterance-level norm cannot run frame by frame")
        if noisy_mag.shape[-1] != 1:
            raise ValueError(f"step takes one frame, got {noisy_mag.shape[-1]}")
        return self.forward_chunk(noisy_mag, state)

    def step_subband(
        self, units: torch.Tensor, state: dict, frame_index: int | torch.Tensor, runs: bool
    ) -> None:
        """Add one frame's sub-band units ``[B * M, 1, unit size]`` to the block in ``state``; on a
        frame where the sub-band model steps (``runs``), run it on the block's mean and start a
        new block. ``frame_index`` may be a 0-d tensor (the ONNX graph reads it from its state).
        """
        acc = state.get("sb_acc")
        acc = units if acc is None else acc + units
        if runs:
            # Frame 0 is a block of its own (the look-back stops there); later blocks average
            # shrink_size frames, as forward's shrink does.
            if isinstance(frame_index, torch.Tensor):
                divisor = torch.where(frame_index > 0, float(self.config.shrink_size), 1.0)
            else:
                divisor = 1 if frame_index == 0 else self.config.shrink_size
            state["sb_out"] = self.subband(acc / divisor, state)
            acc = torch.zeros_like(acc)
        state["sb_acc"] = acc

    def runs_subband(self, frame_index: int) -> bool:
        """Whether the sub-band model takes a step at this frame (the costly frames)."""
        return self.config.runs_subband(frame_index)


def build_model(
    config: ModelConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> FastFullSubNet:
    """A Fast FullSubNet with random weights; ``config`` (or keyword overrides) changes fields.

    ``build_model()`` is the paper-size model; ``build_model({"num_mels": 32})`` overrides a field.
    """
    cfg = as_config(config)
    if overrides:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    return FastFullSubNet(cfg)
