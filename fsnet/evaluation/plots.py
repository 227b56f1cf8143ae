"""Spectrogram plots (noisy / enhanced / clean) of the first files of a test set or subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsnet.audio import SAMPLE_RATE
from fsnet.cli import StopSignals
from fsnet.evaluation.enhance import Enhanced
from fsnet.evaluation.testset import Item
from fsnet.files import atomic_write


def plot_spectrograms(path: Path, title: str, panels: list[tuple[str, np.ndarray]]) -> None:
    """Spectrograms (dB, shared colour scale) of the given signals, one above the other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_fft, hop = 512, 128
    window = np.hanning(n_fft + 1)[:-1]
    specs = []
    for _, x in panels:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < n_fft:
            x = np.pad(x, (0, n_fft - x.shape[0]))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * window
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        specs.append(10 * np.log10(power.T + 1e-10))
    vmax = max(float(s.max()) for s in specs)
    vmin = vmax - 80.0
    fig = Figure(figsize=(10, 2.4 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (label, x), spec in zip(axes, panels, specs, strict=True):
        duration = len(x) / SAMPLE_RATE
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(0.0, duration, 0.0, SAMPLE_RATE / 2000.0),
            interpolation="nearest",
        )
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=list(axes), label="dB")
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_plots(
    folder: Path,
    items: list[Item],
    names: list[str],
    enhanced: Enhanced,
    groups: list[list[int]],
    count: int,
    stop: StopSignals,
) -> list[str]:
    """Plot the first ``count`` files of each group (the test set, or each subset) as
    ``folder/names[i]``; the paths written. A stop signal ends it between plots."""
    written = []
    for group in groups:
        for i in group[:count]:
            stop.check()
            panels = [(f"noisy: {items[i].noisy.name}", enhanced.noisy[i])]
            panels += [(f"enhanced ({m})", y[i]) for m, y in enhanced.outputs.items()]
            if enhanced.clean[i] is not None:
                panels.append((f"clean: {items[i].clean.name}", enhanced.clean[i]))
            path = folder / names[i]
            plot_spectrograms(path, items[i].where(items[i].key), panels)
            written.append(str(path))
    return written
