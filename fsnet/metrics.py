"""Speech-quality metrics of an enhanced signal, computed with the reference libraries.

Intrusive metrics (need the clean reference, same length, 16 kHz):

- ``pesq_wb``: wide-band PESQ, ITU-T P.862.2 MOS-LQO (about 1.04 .. 4.64), library ``pesq``.
- ``pesq_nb``: narrow-band PESQ, ITU-T P.862 MOS-LQO mapped (about 1.02 .. 4.55), library ``pesq``.
- ``stoi``: short-time objective intelligibility (0 .. 1), library ``pystoi``.
- ``estoi``: extended STOI (0 .. 1), ``pystoi`` with ``extended=True``.
- ``si_sdr``: scale-invariant signal-to-distortion ratio in dB, see :func:`si_sdr`.

Non-intrusive metrics (the signal alone; usable on real recordings without a reference):

- ``dnsmos_sig`` / ``dnsmos_bak`` / ``dnsmos_ovrl``: DNSMOS P.835 speech quality, background-noise
  quality and overall quality (MOS, 1 .. 5), and ``dnsmos_p808``: DNSMOS P.808 overall MOS, all from
  the ONNX models shipped inside the ``speechmos`` wheel (nothing is downloaded).

A metric that cannot be computed for a signal (too short for PESQ, no speech detected, silence,
non-finite samples) comes back as NaN and a :class:`MetricWarning` says why; it never raises.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable

import numpy as np

from fsnet.audio import SAMPLE_RATE  # every metric here is computed at this rate

INTRUSIVE_METRICS = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr")
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
ALL_METRICS = INTRUSIVE_METRICS + DNSMOS_METRICS

# Names a user may ask for; "dnsmos" selects the four DNSMOS outputs (one model run gives all four).
METRIC_GROUPS: dict[str, tuple[str, ...]] = {name: (name,) for name in INTRUSIVE_METRICS}
METRIC_GROUPS["dnsmos"] = DNSMOS_METRICS
METRIC_GROUPS.update({name: DNSMOS_METRICS for name in DNSMOS_METRICS})

# SI-SDR of an estimate with no distortion at all would be +inf; it is capped at this value (dB)
# so that averages and JSON stay finite.
SI_SDR_MAX_DB = 200.0


class MetricWarning(UserWarning):
    """A metric could not be computed for one signal and was set to NaN."""


def _warn(message: str) -> float:
    warnings.warn(message, MetricWarning, stacklevel=3)
    return math.nan


def expand_metric_names(names: Iterable[str]) -> tuple[str, ...]:
    """Turn user metric names (``pesq_wb``, ``dnsmos``, ...) into the ordered list of outputs.

    Raises ``ValueError`` naming the unknown names and the valid ones.
    """
    names = list(names)
    unknown = [n for n in names if n not in METRIC_GROUPS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(set(METRIC_GROUPS))}")
    wanted = {m for n in names for m in METRIC_GROUPS[n]}
    return tuple(m for m in ALL_METRICS if m in wanted)


def _as_1d_float64(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        a = np.squeeze(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D signal, got shape {np.shape(x)}")
    return a


# --------------------------------------------------------------------------------------- SI-SDR


def si_sdr(reference, estimate) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., ICASSP 2019).

    ``reference``, ``estimate``: 1-D, same length, same (any) sample rate.

    Both signals are made zero-mean first. With ``s`` the reference and ``ŝ`` the estimate::

        alpha    = <ŝ, s> / <s, s>          # optimal scaling of the reference
        e_target = alpha * s
        e_noise  = ŝ - e_target
        SI-SDR   = 10 * log10(||e_target||² / ||e_noise||²)

    so multiplying the estimate by any non-zero constant leaves it unchanged. A distortion-free
    estimate is capped at ``SI_SDR_MAX_DB``; a silent reference or estimate gives NaN (warning).
    Computed in float64.
    """
    s = _as_1d_float64(reference, "reference")
    s_hat = _as_1d_float64(estimate, "estimate")
    if s.shape != s_hat.shape:
        raise ValueError(f"si_sdr needs equal lengths, got {s.shape[0]} and {s_hat.shape[0]}")
    if not (np.isfinite(s).all() and np.isfinite(s_hat).all()):
        return _warn("si_sdr: signal has non-finite samples; SI-SDR set to NaN")
    s = s - s.mean()
    s_hat = s_hat - s_hat.mean()
    ref_energy = float(np.dot(s, s))
    if ref_energy == 0.0:
        return _warn(
            "si_sdr: reference is silent (zero after removing the mean); SI-SDR set to NaN"
        )
    alpha = float(np.dot(s_hat, s)) / ref_energy
    target = alpha * s
    noise = s_hat - target
    target_energy = float(np.dot(target, target))
    noise_energy = float(np.dot(noise, noise))
    if target_energy == 0.0:
        if noise_energy == 0.0:
            return _warn("si_sdr: estimate is silent; SI-SDR set to NaN")
        return -SI_SDR_MAX_DB  # estimate orthogonal to the reference
    if noise_energy <= target_energy * 10.0 ** (-SI_SDR_MAX_DB / 10.0):
        return SI_SDR_MAX_DB
    return float(10.0 * np.log10(target_energy / noise_energy))


# ----------------------------------------------------------------------------------------- PESQ


def _pesq(reference, degraded, sample_rate: int, mode: str) -> float:
    from pesq import PesqError, pesq

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"PESQ is computed at {SAMPLE_RATE} Hz here, got {sample_rate} Hz")
    ref = _as_1d_float64(reference, "reference")
    deg = _as_1d_float64(degraded, "degraded")
    if ref.shape != deg.shape:
        raise ValueError(f"PESQ needs equal lengths, got {ref.shape[0]} and {deg.shape[0]}")
    name = f"pesq_{mode}"
    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        return _warn(f"{name}: signal has non-finite samples; set to NaN")
    if ref.shape[0] < sample_rate // 4:
        return _warn(
            f"{name}: signal is {ref.shape[0] / sample_rate:.3f} s long, PESQ needs at least 0.25 s; "
            "set to NaN"
        )
    if not np.any(ref) or not np.any(deg):
        return _warn(f"{name}: reference or degraded signal is silent; set to NaN")
    try:
        return float(pesq(sample_rate, ref, deg, mode))
    except PesqError as exc:  # NoUtterancesError, BufferTooShortError, ...
        msg = exc.args[0] if exc.args else type(exc).__name__
        if isinstance(msg, bytes):
            msg = msg.decode(errors="replace")
        return _warn(f"{name}: {type(exc).__name__}: {msg}; set to NaN")


def pesq_wb(reference, degraded, sample_rate: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2) MOS-LQO of 1-D signals of equal length at 16 kHz; NaN with a
    warning when PESQ cannot be computed."""
    return _pesq(reference, degraded, sample_rate, "wb")


def pesq_nb(reference, degraded, sample_rate: int = SAMPLE_RATE) -> float:
    """Narrow-band PESQ (ITU-T P.862 + P.862.1 mapping) MOS-LQO of 1-D signals of equal length at
    16 kHz; NaN on failure."""
    return _pesq(reference, degraded, sample_rate, "nb")


# ----------------------------------------------------------------------------------------- STOI


# pystoi works at 10 kHz on 256-sample frames with a 128-sample hop and needs 30 of them: a signal
# shorter than 29 * 128 + 256 samples at 10 kHz can never reach that (and a very short one raises).
_STOI_MIN_SAMPLES_10K = 29 * 128 + 256


def stoi(reference, degraded, sample_rate: int = SAMPLE_RATE, extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended=True``) from ``pystoi``, 0 .. 1, of 1-D signals of equal
    length at ``sample_rate`` (pystoi works at 10 kHz and resamples).

    pystoi returns a meaningless 1e-5 when fewer than 30 frames (384 ms) of speech remain after its
    silent-frame removal, raises on signals shorter than a frame, and scores a silent reference
    (which has no speech to be intelligible) as about 0; these cases are reported as NaN with a
    warning instead.
    """
    from pystoi import stoi as _stoi

    ref = _as_1d_float64(reference, "reference")
    deg = _as_1d_float64(degraded, "degraded")
    if ref.shape != deg.shape:
        raise ValueError(f"STOI needs equal lengths, got {ref.shape[0]} and {deg.shape[0]}")
    name = "estoi" if extended else "stoi"
    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        return _warn(f"{name}: signal has non-finite samples; set to NaN")
    if ref.shape[0] < _STOI_MIN_SAMPLES_10K * sample_rate / 10000:
        return _warn(
            f"{name}: signal is {ref.shape[0] / sample_rate:.3f} s long, too short for the 30 frames "
            "(about 0.4 s) of speech STOI needs; set to NaN"
        )
    if np.ptp(ref) == 0.0:
        return _warn(f"{name}: reference is silent (no energy); set to NaN")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref, deg, sample_rate, extended=extended))
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            return _warn(
                f"{name}: too little non-silent speech in the reference (needs 30 frames, "
                "about 0.4 s); set to NaN"
            )
    if not math.isfinite(value):
        return _warn(f"{name}: not finite (silent signal?); set to NaN")
    return value


def estoi(reference, degraded, sample_rate: int = SAMPLE_RATE) -> float:
    """Extended STOI (Jensen & Taal 2016) from ``pystoi``, 0 .. 1, of 1-D signals of equal length at
    ``sample_rate``; NaN on failure."""
    return stoi(reference, degraded, sample_rate, extended=True)


# --------------------------------------------------------------------------------------- DNSMOS

_DNSMOS_THREADS = 0  # onnxruntime intra-op threads for DNSMOS; 0 = onnxruntime's default


def set_dnsmos_threads(num_threads: int) -> None:
    """Number of CPU threads each DNSMOS model may use (0 = onnxruntime default = all cores).

    Call before the first :func:`dnsmos` in a process; worker processes that run in parallel
    should use 1 so they do not fight over the cores.
    """
    global _DNSMOS_THREADS
    _DNSMOS_THREADS = int(num_threads)


def _prime_speechmos() -> None:
    """Create speechmos' cached model with our onnxruntime session options (once per process).

    ``speechmos.dnsmos.run`` builds its ``DNSMOS`` object with default sessions on first use and
    keeps it in the module global ``dnsmos``; we put one there with CPU-only sessions and the
    configured thread count. Paths are those ``run`` computes, so it reuses our object.
    """
    import onnxruntime as ort
    from speechmos import dnsmos as sm

    here = os.path.dirname(os.path.abspath(sm.__file__))
    primary = os.path.join(here, "dnsmos_models", "sig_bak_ovr.onnx")
    if sm.dnsmos is not None and sm.dnsmos.primary_model_path == primary:
        return
    p808 = os.path.join(here, "dnsmos_models", "model_v8.onnx")
    opts = ort.SessionOptions()
    if _DNSMOS_THREADS > 0:
        opts.intra_op_num_threads = _DNSMOS_THREADS
        opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    obj = sm.DNSMOS.__new__(sm.DNSMOS)
    obj.primary_model_path = primary
    obj.onnx_sess = ort.InferenceSession(primary, opts, providers=providers)
    obj.p808_onnx_sess = ort.InferenceSession(p808, opts, providers=providers)
    sm.dnsmos = obj


def dnsmos(audio, sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS of one 16 kHz signal, via ``speechmos``.

    Uses ``speechmos.dnsmos.run(audio, sr=16000)`` with its bundled ONNX models. Clips shorter than
    the model's 9.01 s input are tiled by speechmos (as the official DNSMOS script does); longer
    clips are scored on 9.01 s windows every second and averaged. Samples are clipped to [-1, 1]
    (speechmos rejects values outside). Silent or non-finite input gives NaNs with a warning.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"DNSMOS needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    x = _as_1d_float64(audio, "audio")
    nan = dict.fromkeys(DNSMOS_METRICS, math.nan)
    if x.shape[0] == 0:
        _warn("dnsmos: empty signal; set to NaN")
        return nan
    if not np.isfinite(x).all():
        _warn("dnsmos: signal has non-finite samples; set to NaN")
        return nan
    if not np.any(x):
        _warn("dnsmos: signal is silent; set to NaN")
        return nan
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    _prime_speechmos()
    from speechmos import dnsmos as sm

    with np.errstate(all="ignore"):
        out = sm.run(x, sr=SAMPLE_RATE)
    result = {
        "dnsmos_sig": float(out["sig_mos"]),
        "dnsmos_bak": float(out["bak_mos"]),
        "dnsmos_ovrl": float(out["ovrl_mos"]),
        "dnsmos_p808": float(out["p808_mos"]),
    }
    if not all(math.isfinite(v) for v in result.values()):
        _warn("dnsmos: model returned a non-finite score; set to NaN")
        return nan
    return result


# ------------------------------------------------------------------------------------ all at once


def compute_metrics(
    estimate,
    reference=None,
    metrics: Iterable[str] = ALL_METRICS,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, float]:
    """Every requested metric of ``estimate`` (1-D, 16 kHz) as ``{name: value}``.

    ``metrics`` takes names of :data:`ALL_METRICS` or the group ``"dnsmos"``. Intrusive metrics
    need ``reference`` of the same length; without one they are left out of the result.
    """
    names = expand_metric_names(metrics)
    est = _as_1d_float64(estimate, "estimate")
    result: dict[str, float] = {}
    if reference is not None:
        ref = _as_1d_float64(reference, "reference")
        if ref.shape != est.shape:
            raise ValueError(
                f"reference and estimate lengths differ: {ref.shape[0]} vs {est.shape[0]}"
            )
        for name in names:
            if name == "pesq_wb":
                result[name] = pesq_wb(ref, est, sample_rate)
            elif name == "pesq_nb":
                result[name] = pesq_nb(ref, est, sample_rate)
            elif name == "stoi":
                result[name] = stoi(ref, est, sample_rate)
            elif name == "estoi":
                result[name] = estoi(ref, est, sample_rate)
            elif name == "si_sdr":
                result[name] = si_sdr(ref, est)
    if any(n in DNSMOS_METRICS for n in names):
        scores = dnsmos(est, sample_rate)
        result.update({n: scores[n] for n in names if n in DNSMOS_METRICS})
    return {n: result[n] for n in names if n in result}
