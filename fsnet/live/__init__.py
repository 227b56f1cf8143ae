"""Real-time enhancement: ``python stream_infer.py`` / ``fsnet-stream``.

Two front ends drive the same engine (:class:`fsnet.streaming.StreamingEnhancer`):

* ``--mic`` (:mod:`.mic_mode`): a full-duplex PortAudio stream (``sounddevice``) from an input
  device to an output device. Any device rate and channel count: the capture is downmixed to mono
  and resampled to the model rate with a streaming resampler (``soxr.ResampleStream``), the
  enhanced signal is resampled back and copied to every output channel (:mod:`.pipeline`).
* ``--input noisy.wav --output enhanced.wav`` (:mod:`.file_mode`): the same engine over a file,
  block by block, as fast as possible or paced at real time (``--realtime``); the output is
  time-aligned with the input and equals ``fsnet.enhance(model, x)``.

Design (see docs/realtime.md): the enhancement runs inside the PortAudio callback by default
(``--engine callback``), which is deterministic and has the lowest latency when a block's compute
fits in the block; ``--engine thread`` moves it to a worker thread behind a fixed jitter buffer of
``--queue-blocks`` blocks. Either way the output goes through a FIFO that starts with exactly the
number of silent samples the pipeline needs (found by simulating the block/hop/resampler sample
counts), so the input-to-output delay is constant. If the worker is late, silence is played and
its samples are dropped when they arrive, so the delay never drifts; in the callback engine a
shortfall can only be structural (resampler buffering above the estimate), so the delay grows
by the missing samples once instead.

Modules: :mod:`.cli` (options, checks, ``main``), :mod:`.engine` (model / passthrough engines),
:mod:`.devices` (PortAudio and JACK devices), :mod:`.pipeline` (the --mic signal path),
:mod:`.record` (output files, the recorder), :mod:`.report` (statistics, status line, summary),
:mod:`.file_mode` and :mod:`.mic_mode`. Stop signals: see :mod:`fsnet.cli`.
"""

from fsnet.live.cli import main

__all__ = ["main"]
