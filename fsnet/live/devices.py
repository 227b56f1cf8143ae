"""Audio devices through PortAudio (sounddevice) and JACK: finding, checking, listing them."""

from __future__ import annotations

import os
import sys

from fsnet.audio import SAMPLE_RATE
from fsnet.errors import FsnetError


class CStderrCaptured:
    """Send what C libraries write to file descriptor 2 into a temporary file for a while.

    PortAudio's init lets ALSA and libjack print about every host API it cannot use, its ALSA
    backend prints failed assertions when a device refuses a format, and ALSA's PulseAudio
    plugin reports an underrun while a stream starts (before any audio): noise that would be
    the first thing a user reads. After the block, ``lines`` holds it, for an error message.
    """

    def __enter__(self) -> CStderrCaptured:
        import tempfile

        self.lines: list[str] = []
        self.file = tempfile.TemporaryFile(mode="w+b")
        try:
            self.saved: int | None = os.dup(2)
        except OSError:
            self.saved = None
        if self.saved is not None:
            sys.stderr.flush()
            os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        self.file.seek(0)
        self.lines = self.file.read().decode(errors="replace").strip().splitlines()
        self.file.close()

    def hint(self) -> str:
        """The last captured line, as " (...)" to append to an error, or ""."""
        return f" ({self.lines[-1]})" if self.lines else ""


def import_sounddevice():
    """Import sounddevice (initialises PortAudio) with the C libraries' probe chatter hidden;
    it is shown only if the import fails."""
    chatter = CStderrCaptured()
    try:
        with chatter:
            import sounddevice as sd
    except OSError as exc:  # PortAudio library missing
        raise FsnetError(
            f"cannot use audio devices: {exc}{chatter.hint()} (install libportaudio2)"
        ) from exc
    return sd


def _device_list_brief(sd, kind: str) -> str:
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    try:
        devices = sd.query_devices()
    except Exception:  # noqa: BLE001
        return "none"
    names = [f"{i} '{d['name']}' ({d[key]} ch)" for i, d in enumerate(devices) if d[key] > 0]
    return ", ".join(names) if names else "none"


def _parse_device(value: str | None) -> int | str | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else value


def resolve_device(sd, value: str | None, kind: str) -> tuple[int, dict]:
    device = _parse_device(value)
    if device is None:
        default = sd.default.device[0 if kind == "input" else 1]
        if default is None or (isinstance(default, int) and default < 0):
            raise FsnetError(
                f"no default {kind} device; {kind} devices: {_device_list_brief(sd, kind)}"
            )
        device = default
    try:
        info = sd.query_devices(device, kind)
    except (ValueError, sd.PortAudioError) as exc:
        msg = str(exc).rstrip(".")
        raise FsnetError(
            f"{kind} device {value!r}: {msg}; {kind} devices: {_device_list_brief(sd, kind)}"
        ) from exc
    return int(info["index"]), dict(info)


def list_devices() -> int:
    sd = import_sounddevice()
    devices = sd.query_devices()
    if not len(devices):
        apis = ", ".join(api["name"] for api in sd.query_hostapis()) or "none"
        print(f"no audio devices found (host APIs: {apis})")
        return 0
    print(devices)
    print("host APIs: " + ", ".join(api["name"] for api in sd.query_hostapis()))
    return 0


def jack_period() -> int | None:
    """The running JACK server's period (frames), asked through libjack; None if unknown.

    The stream is opened with blocksize 0 so that PortAudio hands over JACK's own buffers (an
    explicit size, even equal to the period, costs a period of latency), but the FIFO is best
    sized before the stream starts. The server is the one PortAudio uses (JACK_DEFAULT_SERVER).
    """
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.jack_get_buffer_size.restype = ctypes.c_uint32
        lib.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        status = ctypes.c_int(0)
        client = lib.jack_client_open(
            b"fsnet_period_probe", 0x01, ctypes.byref(status)
        )  # NoStartServer
        if not client:
            return None
        try:
            return int(lib.jack_get_buffer_size(client)) or None
        finally:
            lib.jack_client_close(client)
    except (OSError, AttributeError):
        return None


def choose_format(
    sd, args, in_idx: int, in_info: dict, out_idx: int, out_info: dict
) -> tuple[int, int, int]:
    cin = args.input_channels or min(2, int(in_info["max_input_channels"]))
    cout = args.output_channels or min(2, int(out_info["max_output_channels"]))
    if cin < 1:
        raise FsnetError(f"input device '{in_info['name']}' has no input channels")
    if cout < 1:
        raise FsnetError(f"output device '{out_info['name']}' has no output channels")
    if args.samplerate:
        candidates = [args.samplerate]
    else:
        candidates = [
            SAMPLE_RATE,
            int(in_info["default_samplerate"]),
            int(out_info["default_samplerate"]),
        ]
    problems = []
    for rate in dict.fromkeys(candidates):
        try:
            with CStderrCaptured():  # PortAudio's message is in the exception
                sd.check_input_settings(
                    device=in_idx, channels=cin, dtype="float32", samplerate=rate
                )
                sd.check_output_settings(
                    device=out_idx, channels=cout, dtype="float32", samplerate=rate
                )
            return rate, cin, cout
        except sd.PortAudioError as exc:
            problems.append(f"{rate} Hz: {exc}")
    raise FsnetError(
        f"devices '{in_info['name']}' ({cin} ch in) / '{out_info['name']}' ({cout} ch out) refuse "
        f"float32 audio at {', '.join(problems)}"
    )


def parse_latency(value: str) -> str | float:
    if value in ("low", "high"):
        return value
    try:
        return float(value)
    except ValueError:
        raise FsnetError(f"--latency must be low, high or seconds, got {value!r}") from None
