"""Frame-in/frame-out streaming engine around a trained FastFullSubNet.

It owns only what streaming adds: the input buffer, the queue of spectra waiting for their
look-ahead, and the overlap-add tail. Every number the network computes comes from
``FastFullSubNet.step`` on the model's own parameters.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from fsnet.errors import FsnetError
from fsnet.frontend import apply_mask
from fsnet.model import FastFullSubNet


class StreamingEnhancer:
    """Enhance B independent streams chunk by chunk.

    ``process(chunk)`` takes any number of samples (1-D for one stream, ``[B, n]`` for B) at the
    model's sample rate and returns the samples that are ready: after ``k`` input samples in
    total, ``hop * (k // hop)`` output samples have come out. The output is the offline
    enhancement delayed by ``latency_samples`` (zeros first). ``flush()`` returns the rest, so
    that concatenating everything and dropping the first ``latency_samples`` gives
    ``enhance(model, x)``; it then resets the engine for a new stream.
    """

    def __init__(self, model: FastFullSubNet, num_streams: int = 1):
        if model.norm != "cumulative":
            raise FsnetError(
                "this model uses utterance-level normalisation and cannot stream; "
                "load it with norm='cumulative'"
            )
        if num_streams < 1:
            raise ValueError("num_streams must be >= 1")
        self.model = model.eval()
        self.config = model.config
        self.num_streams = num_streams
        self.stft = model.stft
        self.hop_samples = self.config.hop_samples
        self.latency_samples = self.config.latency_samples
        self.sample_rate = self.config.sample_rate
        self.reset()

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def device(self) -> torch.device:
        return self.stft.window.device

    def reset(self) -> None:
        """Forget the stream: state, buffers and counters start afresh."""
        batch, n_fft = self.num_streams, self.config.n_fft
        self._input = torch.zeros(batch, self.stft.pad_samples, device=self.device)
        self._ola = torch.zeros(batch, n_fft, device=self.device)
        self._waiting: deque[torch.Tensor] = deque()  # spectra [B, F] whose mask is not ready
        self._state = self.model.init_state()
        self._samples_in = 0
        self._samples_out = 0
        self._numpy_out = True

    # ------------------------------------------------------------------ internals
    def _emit(self, spec: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """Overlap-add one masked frame (if any) and release ``hop`` final samples ``[B, hop]``."""
        hop = self.hop_samples
        if mask is not None:
            enhanced = apply_mask(spec[..., None], mask)  # [B, F, 1]
            self._ola += self.stft.synthesize(enhanced)[:, 0]
        out = self._ola[:, :hop] / self.stft.ola_envelope
        self._ola = torch.roll(self._ola, -hop, dims=1)
        self._ola[:, -hop:] = 0
        # Stream samples before latency_samples precede the signal: keep them silent.
        silent = self.latency_samples - self._samples_out
        if silent > 0:
            out[:, : min(silent, hop)] = 0
        self._samples_out += hop
        return out

    def _network_step(self, spec: torch.Tensor | None) -> torch.Tensor:
        """Advance the network by one frame (``None``: a zero look-ahead frame past the end)."""
        batch, num_freqs = self.num_streams, self.config.num_freqs
        if spec is None:
            mag = torch.zeros(batch, 1, num_freqs, 1, device=self.device)
        else:
            self._waiting.append(spec)
            mag = spec.abs()[:, None, :, None]
        mask = self.model.step(mag, self._state)
        if len(self._waiting) > self.config.look_ahead or spec is None:
            return self._emit(self._waiting.popleft(), mask)
        return self._emit(None, None)

    def _run_frames(self) -> list[torch.Tensor]:
        n_fft, hop = self.config.n_fft, self.hop_samples
        outputs = []
        while self._input.shape[-1] >= n_fft:
            frame = self._input[:, :n_fft]
            self._input = self._input[:, hop:]
            spec = self.stft.analyze(frame[:, None, :])[..., 0]  # [B, F]
            outputs.append(self._network_step(spec))
        return outputs

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def process(self, chunk: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Feed samples (1-D, or ``[B, n]``) and get the ready output (same shape convention)."""
        is_tensor = isinstance(chunk, torch.Tensor)
        x = torch.as_tensor(chunk if is_tensor else np.asarray(chunk), dtype=torch.float32)
        batch_dims = x.dim() == 2
        if not batch_dims:
            x = x[None]
        if x.dim() != 2 or x.shape[0] != self.num_streams:
            raise ValueError(
                f"expected {'1-D' if self.num_streams == 1 else ''} input with "
                f"{self.num_streams} stream(s), got shape {tuple(x.shape)}"
            )
        self._input = torch.cat((self._input, x.to(self.device)), dim=-1)
        self._samples_in += x.shape[-1]
        self._numpy_out = not is_tensor
        outputs = self._run_frames()
        out = torch.cat(outputs, dim=-1) if outputs else x.new_zeros(self.num_streams, 0)
        if not batch_dims:
            out = out[0]
        return out if is_tensor else out.cpu().numpy()

    @torch.inference_mode()
    def flush(self) -> np.ndarray | torch.Tensor:
        """Finish the stream: the remaining output, then ``reset()``.

        Returns ``[B, n]`` for several streams, 1-D for one; numpy if ``process`` got numpy.
        """
        num_frames_total = self.stft.num_frames(self._samples_in)
        frames_done = self._state["frames"]
        outputs = []
        if num_frames_total:
            hop = self.hop_samples
            # Zero-pad the input so that exactly the frames offline STFT makes get computed.
            need = self.config.n_fft + (num_frames_total - frames_done - 1) * hop
            missing = max(0, need - self._input.shape[-1])
            self._input = torch.nn.functional.pad(self._input, (0, missing))
            outputs = self._run_frames()
            for _ in range(self.config.look_ahead):
                outputs.append(self._network_step(None))
        total_wanted = self._samples_in + self.latency_samples if self._samples_in else 0
        emitted_before = self._samples_out - sum(o.shape[-1] for o in outputs)
        out = torch.cat(outputs, dim=-1) if outputs else torch.zeros(self.num_streams, 0)
        out = out[:, : max(0, total_wanted - emitted_before)]
        as_numpy = self._numpy_out
        self.reset()
        if self.num_streams == 1:
            out = out[0]
        return out.cpu().numpy() if as_numpy else out
