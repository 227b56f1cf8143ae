"""Frame-in/frame-out streaming engine around a trained FastFullSubNet.

It owns only what streaming adds: the last window of input, the spectra waiting for their
look-ahead, and the overlap-add tail. Every number the network computes comes from
``FastFullSubNet.forward_chunk`` on the model's own parameters, over all the hops a call makes
ready.

All carried state lives in tensors of fixed shape. With ``cuda_graphs=True`` (or autocast) the
new values are copied into the same tensors after each hop, so that the hop can be captured once
as a CUDA graph and replayed; otherwise a hop just rebinds the entries to the new tensors, which
saves a copy per state tensor on every hop of a CPU stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fsnet.audio import as_float_samples
from fsnet.errors import FsnetError
from fsnet.frontend import MaskShaping, apply_mask
from fsnet.model import FastFullSubNet


def _tensor_leaves(tree: Any) -> Iterator[torch.Tensor]:
    """The tensors of a state tree (dicts / tuples / lists), in a fixed order."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for key in sorted(tree, key=str):
            yield from _tensor_leaves(tree[key])
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _tensor_leaves(item)


def _copy_structure(tree: Any) -> Any:
    """New dicts all the way down, same tensors: lets a step rebind entries without touching ours."""
    return {k: _copy_structure(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def check_streamable(model: FastFullSubNet) -> None:
    """FsnetError unless ``model``'s norm is causal (utterance norm needs the whole signal)."""
    if model.norm != "cumulative":
        raise FsnetError(
            "this model uses utterance-level normalisation and cannot stream; "
            "load it with norm='cumulative'"
        )


class StreamingEnhancer:
    """Enhance B independent streams chunk by chunk.

    ``process(chunk)`` takes any number of samples (1-D for one stream, ``[B, n]`` for B) at the
    model's sample rate and returns the samples that are ready: after ``k`` input samples in
    total, ``hop * (k // hop)`` output samples have come out. The output is the offline
    enhancement delayed by ``latency_samples`` (zeros first). ``flush()`` returns the rest, so
    that concatenating everything and dropping the first ``latency_samples`` gives
    ``enhance(model, x)``; it then resets the engine for a new stream.

    All the hops one call makes ready run through the network as one chunk
    (``FastFullSubNet.forward_chunk``), at most ``max_chunk_seconds`` of audio at a time, so a
    call that brings several hops costs about what the offline forward costs for them.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the network under autocast;
    ``cuda_graphs=True`` captures the hop as CUDA graphs (CUDA models only) and runs hop by hop.
    ``shaping`` (``fsnet.frontend.MaskShaping``; None = off) sets the noise-suppression strength,
    bin by bin as ``fsnet.enhance`` does, so the stream still equals the offline enhancement.
    """

    def __init__(
        self,
        model: FastFullSubNet,
        num_streams: int = 1,
        autocast_dtype: torch.dtype | None = None,
        cuda_graphs: bool = False,
        max_chunk_seconds: float = 10.0,
        shaping: MaskShaping | None = None,
    ):
        check_streamable(model)
        if num_streams < 1:
            raise ValueError("num_streams must be >= 1")
        self.model = model.eval()
        self.config = model.config
        self.num_streams = num_streams
        self.stft = model.stft
        self._envelope = model.stft.ola_envelope  # [hop]: what overlap-added samples divide by
        self.hop_samples = self.config.hop_samples
        self.latency_samples = self.config.latency_samples
        self.sample_rate = self.config.sample_rate
        self.autocast_dtype = autocast_dtype
        # fixed at construction: a CUDA graph captures it on first use
        self._shaping = shaping if shaping is not None else MaskShaping()
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs the model on a CUDA device")
        self.cuda_graphs = cuda_graphs
        if not max_chunk_seconds > 0:
            raise ValueError("max_chunk_seconds must be > 0")
        # The most frames one network call runs: bounds memory when a call brings a long signal.
        self.max_chunk_frames = max(
            1, round(max_chunk_seconds * self.sample_rate / self.hop_samples)
        )
        # Only a captured graph (and autocast, whose steps hand back low-precision tensors)
        # needs the hop's results copied into the fixed state tensors.
        self._in_place = cuda_graphs or autocast_dtype is not None
        batch, n_fft, num_freqs = num_streams, self.config.n_fft, self.config.num_freqs
        device = self.device
        self._buffers = {
            "window": torch.zeros(batch, n_fft, device=device),  # last n_fft input samples
            # spectra of the last look_ahead + 1 frames; [0] is the one the next mask is for
            "waiting": torch.zeros(
                self.config.look_ahead + 1, batch, num_freqs, dtype=torch.complex64, device=device
            ),
            "ola": torch.zeros(batch, n_fft, device=device),  # overlap-add tail
        }
        self._state = self._new_state()
        self._block = torch.zeros(batch, self.hop_samples, device=device)  # the hop's input
        self._graphs: dict[bool, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.reset()

    @property
    def shaping(self) -> MaskShaping:
        """The mask shaping every hop applies (read-only: a CUDA graph captures it)."""
        return self._shaping

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def device(self) -> torch.device:
        return self.stft.window.device

    def reset(self) -> None:
        """Forget the stream: state, buffers and counters start afresh (in place for graphs)."""
        if self._in_place:
            for leaf in _tensor_leaves((self._buffers, self._state)):
                leaf.zero_()
        else:
            # Hops rebind the entries to tensors made in inference mode, which cannot be
            # zeroed in place out of it: start from new ones.
            self._buffers = {k: torch.zeros_like(v) for k, v in self._buffers.items()}
            self._state = self._new_state()
        self._state["frames"] = 0
        self._pending = self._no_samples = torch.zeros(self.num_streams, 0, device=self.device)
        self._samples_in = 0
        self._samples_out = 0
        self._numpy_out = True

    # Whether the norms' frame counts may be Python ints where the state is rebound: one op per
    # hop and norm instead of four on 0-d tensors. Off where the state must stay all tensors
    # (the ONNX engine feeds it to its graphs).
    _int_counts = True

    def _new_state(self) -> dict:
        state = self.model.init_state(self.num_streams, self.device)
        if self._int_counts and not self._in_place:
            for key in ("enc_norm", "sb_norm"):
                state[key] = (state[key][0], 0)
        return state

    # ------------------------------------------------------------------ a run of hops
    def _network_chunk(self, mag: torch.Tensor, state: dict) -> torch.Tensor:
        """``model.forward_chunk`` on ``mag [B, 1, F, n]``; a subclass may run it elsewhere
        (fsnet.onnx_export)."""
        return self.model.forward_chunk(mag, state)

    def _hop_function(
        self, block: torch.Tensor | None, frame_index: int, num_frames: int = 1
    ) -> torch.Tensor:
        """``num_frames`` hops as one chunk on the carried tensors; writes the new state back.

        ``block [B, num_frames * hop]`` is the newest input; None stands for look-ahead frames
        past the end (zero spectra, as ``forward`` pads). Returns ``[B, num_frames * hop]``
        final output samples.
        """
        bufs, hop, in_place = self._buffers, self.hop_samples, self._in_place
        n_fft = self.config.n_fft
        state = _copy_structure(self._state) if in_place else self._state
        state["frames"] = frame_index
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()  # entering a disabled torch.autocast costs more
        )
        with autocast:
            if block is None:
                window = bufs["window"]
                spec = bufs["waiting"].new_zeros(
                    self.num_streams, self.config.num_freqs, num_frames
                )
            else:
                # (narrow and unsqueeze: Python's slicing syntax costs more than they do)
                signal = torch.cat((bufs["window"].narrow(1, hop, n_fft - hop), block), dim=1)
                window = signal.narrow(1, signal.shape[1] - n_fft, n_fft)
                spec = self.stft.analyze(signal.unfold(-1, n_fft, hop))  # [B, F, n]
            mask = self._network_chunk(spec.abs().unsqueeze(1), state)
        # waiting[0] is the frame the next mask is for; the look-ahead frames follow it.
        spectra = torch.cat((bufs["waiting"], spec.permute(2, 0, 1)))
        targets = spectra.narrow(0, 1, num_frames).permute(1, 2, 0)
        frames = self.stft.synthesize(apply_mask(targets, mask, self._shaping))  # [B, n, n_fft]
        ola, out = self._overlap_add(frames)
        waiting = spectra.narrow(0, num_frames, spectra.shape[0] - num_frames)
        new_buffers = {"window": window, "waiting": waiting, "ola": ola}
        if not in_place:
            self._buffers = new_buffers  # the network has already rebound self._state's entries
            return out
        for target, value in zip(
            _tensor_leaves((self._buffers, self._state)),
            _tensor_leaves((new_buffers, state)),
            strict=True,
        ):
            if target is not value:
                target.copy_(value)
        return out

    def _overlap_add(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windowed frames ``[B, n, n_fft]`` onto the carried tail -> (new tail ``[B, n_fft]``,
        ``[B, n * hop]`` finished output samples)."""
        batch, num_frames, n_fft = frames.shape
        hop = self.hop_samples
        if num_frames == 1 and not self._in_place:
            # One frame adds once to each sample, onto the tail, which is this hop's own.
            summed = self._buffers["ola"].add_(frames.reshape(batch, n_fft))
            out = summed.narrow(1, 0, hop).div(self._envelope)
            return torch.nn.functional.pad(summed.narrow(1, hop, n_fft - hop), (0, hop)), out
        summed = torch.nn.functional.pad(self._buffers["ola"], (0, (num_frames - 1) * hop))
        parts = frames.reshape(batch, num_frames, n_fft // hop, hop)
        # Earlier frames first (the last hop of each frame), as hop-by-hop adding would.
        for m in reversed(range(n_fft // hop)):
            summed[:, m * hop : (m + num_frames) * hop].add_(parts[:, :, m].reshape(batch, -1))
        done = num_frames * hop
        out = (summed[:, :done].reshape(batch, num_frames, hop) / self._envelope).reshape(
            batch, done
        )
        return torch.nn.functional.pad(summed[:, done:], (0, hop)), out

    def _graph_for(self, runs_subband: bool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Capture (once) the hop that does or does not step the sub-band model."""
        if runs_subband not in self._graphs:
            frame_index = self.config.shrink_size if runs_subband else 1
            saved = [leaf.clone() for leaf in _tensor_leaves((self._buffers, self._state))]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph: cuBLAS handles, allocator pools
                    self._hop_function(self._block, frame_index)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._hop_function(self._block, frame_index)
            for leaf, value in zip(
                _tensor_leaves((self._buffers, self._state)), saved, strict=True
            ):
                leaf.copy_(value)
            self._graphs[runs_subband] = (graph, out)
        return self._graphs[runs_subband]

    def _advance(self, block: torch.Tensor | None, num_frames: int = 1) -> torch.Tensor:
        frame_index = self._state["frames"]
        if self.cuda_graphs and block is not None and frame_index > 0 and num_frames == 1:
            graph, out = self._graph_for(self.model.runs_subband(frame_index))
            self._block.copy_(block)
            graph.replay()
            out = out.clone()
        else:
            out = self._hop_function(block, frame_index, num_frames)
        self._state["frames"] = frame_index + num_frames
        # Stream samples before latency_samples precede the signal: keep them silent.
        silent = self.latency_samples - self._samples_out
        if silent > 0:
            out[:, : min(silent, out.shape[-1])] = 0
        self._samples_out += out.shape[-1]
        return out

    def _run_frames(self, samples: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        """``num_frames`` frames of input ``samples [B, num_frames * hop]`` (None: look-ahead zero
        frames) -> ``[B, num_frames * hop]`` output, in chunks of at most ``max_chunk_frames``
        (one hop at a time under CUDA graphs, which replay a captured hop)."""
        hop = self.hop_samples
        most = 1 if self.cuda_graphs else self.max_chunk_frames
        outputs = []
        for start in range(0, num_frames, most):
            n = min(most, num_frames - start)
            if samples is None or n == num_frames:
                block = samples
            else:
                block = samples.narrow(1, start * hop, n * hop)
            outputs.append(self._advance(block, n))
        if len(outputs) == 1:
            return outputs[0]
        if not outputs:
            return torch.zeros(self.num_streams, 0, device=self.device)
        return torch.cat(outputs, dim=-1)

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def process(self, chunk: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Feed samples (1-D, or ``[B, n]``) and get the ready output (same shape convention).

        Integer samples are scaled by their type's full scale (``fsnet.audio.as_float_samples``:
        int16 / 32768, ...); None or text raise TypeError. ValueError for host (numpy or CPU)
        input holding NaN or infinite samples."""
        is_tensor = isinstance(chunk, torch.Tensor)
        if type(chunk) is np.ndarray and chunk.dtype == np.float32:  # the usual call, at once
            x = torch.from_numpy(chunk)
        else:
            x = torch.as_tensor(as_float_samples(chunk))  # int16 etc. scaled by their full scale
        shape = tuple(x.shape)
        batch_dims = x.dim() == 2
        if not batch_dims:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[0] != self.num_streams:
            raise ValueError(f"expected input for {self.num_streams} stream(s), got shape {shape}")
        # One NaN would reach the LSTM states and the cumulative norm and make every later output
        # NaN; refuse it before any state moves (the live tool zeroes such samples itself). Only
        # for host input: on a GPU the check would stall every hop on a device-to-host sync, and
        # callers batching device streams own their input.
        if is_tensor:
            finite = x.device.type != "cpu" or bool(torch.isfinite(x).all())
        else:  # numpy's check costs a fifth of torch's on a hop of samples
            finite = bool(np.isfinite(x.numpy()).all())
        if not finite:
            raise ValueError("input contains NaN or infinite samples")
        self._numpy_out = not is_tensor
        x = x.to(self.device)
        pending = torch.cat((self._pending, x), dim=1) if self._pending.shape[1] else x
        self._samples_in += x.shape[-1]
        hop = self.hop_samples
        num_hops = pending.shape[-1] // hop
        # All the hops this call makes ready run as one chunk: the full-band weights are read
        # once per chunk rather than once per hop.
        ready = (
            pending if pending.shape[1] == num_hops * hop else pending.narrow(1, 0, num_hops * hop)
        )
        out = self._run_frames(ready, num_hops)
        # A copy: the rest may be a view of the caller's buffer, which it may then overwrite.
        rest = pending.shape[1] - num_hops * hop
        self._pending = pending[:, -rest:].clone() if rest else self._no_samples
        if not batch_dims:
            out = out.select(0, 0)
        return out if is_tensor else out.cpu().numpy()

    @torch.inference_mode()
    def flush(self) -> np.ndarray | torch.Tensor:
        """Finish the stream: the remaining output, then ``reset()``.

        Returns ``[B, n]`` for several streams, 1-D for one; numpy if ``process`` got numpy.
        """
        hop = self.hop_samples
        num_frames_total = self.stft.num_frames(self._samples_in)
        outputs = []
        if num_frames_total:
            # Zero-pad the input so that exactly the frames the offline STFT makes get computed,
            # then drain the look-ahead with zero frames, as the offline forward pads.
            frames_left = num_frames_total - self._state["frames"]
            padded = torch.nn.functional.pad(
                self._pending, (0, frames_left * hop - self._pending.shape[-1])
            )
            outputs = [
                self._run_frames(padded, frames_left),
                self._run_frames(None, self.config.look_ahead),
            ]
        out = torch.cat(outputs, dim=-1) if outputs else self._run_frames(None, 0)
        total_wanted = self._samples_in + self.latency_samples if self._samples_in else 0
        emitted_before = self._samples_out - out.shape[-1]
        out = out[:, : max(0, total_wanted - emitted_before)]
        as_numpy = self._numpy_out
        self.reset()
        if self.num_streams == 1:
            out = out[0]
        return out.cpu().numpy() if as_numpy else out


class AlignedOutput:
    """An engine's output stream moved onto its input's timeline.

    :class:`StreamingEnhancer` returns the enhancement delayed by ``latency_samples``; calling
    this on each returned piece drops that many leading samples in total, so sample ``i`` of what
    it passes on belongs to input sample ``i``. Every consumer that writes or compares a stream
    (file mode, recording, evaluation, ``fsnet.enhance``) aligns through it.
    """

    def __init__(self, latency_samples: int) -> None:
        self.to_drop = int(latency_samples)

    def __call__(self, y: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``y``: the next 1-D piece of the engine's output, numpy or tensor (the same comes back)."""
        if self.to_drop:
            k = min(self.to_drop, len(y))
            self.to_drop -= k
            y = y[k:]
        return y


def enhance_in_blocks(engine: StreamingEnhancer, x: np.ndarray, block: int) -> np.ndarray:
    """Stream the 1-D ``x`` through ``engine`` ``block`` samples at a time; the result is aligned
    with ``x`` sample for sample (and equals ``enhance(model, x)`` to float rounding)."""
    align = AlignedOutput(engine.latency_samples)
    outs = [align(engine.process(x[i : i + block])) for i in range(0, x.shape[0], block)]
    outs.append(align(engine.flush()))
    y = np.concatenate([np.asarray(o, dtype=np.float32) for o in outs])
    if y.shape[0] < x.shape[0]:
        raise RuntimeError(
            f"streaming produced {y.shape[0]} aligned samples for {x.shape[0]} input samples"
        )
    return y[: x.shape[0]]
