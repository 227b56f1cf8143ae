"""``--virtual-mic``: a microphone on the sound server that every application can choose.

On a PulseAudio server (or PipeWire through ``pipewire-pulse``) :class:`VirtualMic` loads

* ``module-null-sink``: a sink nobody hears; the live tool plays the enhanced signal into it, and
* ``module-remap-source`` on that sink's monitor: a real source (not a "Monitor of ..."), so it is
  listed as a microphone, with the description ``--name``.

Both modules carry the property ``fsnet.owner_pid=<pid>`` in their arguments. A start first
unloads the modules of owners that are no longer alive (a run killed by SIGKILL cannot clean
up), so a restart replaces the dead run's device instead of adding a second one; leaving the
``with`` block (Ctrl-C, SIGTERM, the stream ending) unloads what this run loaded.

The server is driven through ``pactl``, its own command-line client (pulseaudio-utils, installed
by ``make install``; PipeWire ships a compatible one), with ``--format=json`` (pactl 15 or newer) for sources and sinks. A
Python client such as ``pulsectl`` (ctypes bindings of libpulse) would add a dependency that is
not in the lock, needs the same libpulse underneath, and was last released in December 2024; the
three operations needed here (list, load, unload) are single ``pactl`` commands, and a failure
comes with the server's own message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading

from fsnet.errors import FsnetError

DEFAULT_NAME = "fsnet denoised microphone"
OWNER_KEY = "fsnet.owner_pid"  # property in the module arguments: which process loaded it
PACTL_TIMEOUT_S = 10.0  # a server that does not answer in this time counts as absent
SINK_RATE_HZ = 48000  # what calls and browsers record at: no resampling on their side
_OWNER = re.compile(re.escape(OWNER_KEY) + r"=(\d+)")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "mic"


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live fsnet run (not a dead run's pid reused by another program)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
        return b"fsnet" in command or b"stream_infer" in command
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Pactl:
    """``pactl`` commands against the server the environment names (PULSE_SERVER, XDG_RUNTIME_DIR)."""

    def __init__(self, env: dict | None = None) -> None:
        self.exe = shutil.which("pactl")
        self.env = env
        if self.exe is None:
            raise FsnetError(
                "--virtual-mic needs pactl (apt-get install pulseaudio-utils) and a PulseAudio or "
                "PipeWire (pipewire-pulse) server"
            )

    def __call__(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [self.exe, *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=PACTL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise FsnetError(
                f"pactl {args[0]}: the sound server did not answer in {PACTL_TIMEOUT_S:g} s"
            ) from None
        if done.returncode != 0:
            raise FsnetError(f"pactl {' '.join(args[:2])}: {done.stderr.strip() or 'failed'}")
        return done.stdout

    def listing(self, what: str) -> list[dict]:
        return json.loads(self("--format=json", "list", what) or "[]")


class VirtualMic:
    """Context manager: the null sink + remapped source named ``name`` exist inside the block.

    ``sink_name`` is where the enhanced signal must be played (e.g. ``PULSE_SINK``);
    ``source_name`` is what applications record from.
    """

    def __init__(self, name: str = DEFAULT_NAME, env: dict | None = None) -> None:
        if not name.strip() or set(name) & set("'\"\\"):
            # the name goes inside the server's quoted module arguments
            raise FsnetError(f"--name must be non-empty, without quotes or backslashes: {name!r}")
        self.name = name
        slug = _slug(name)
        self.source_name = slug if slug.startswith("fsnet") else f"fsnet_{slug}"
        self.sink_name = f"{self.source_name}_sink"
        self.pactl = Pactl(env)
        self.modules: list[str] = []

    def __enter__(self) -> VirtualMic:
        try:
            self.pactl("info")
        except FsnetError as exc:
            raise FsnetError(
                f"--virtual-mic needs a running PulseAudio or PipeWire (pipewire-pulse) server: {exc}"
            ) from None
        self.remove_stale()
        self._check_name_free()
        owner = f"{OWNER_KEY}={os.getpid()}"
        try:
            self._load(
                "module-null-sink",
                f"sink_name={self.sink_name}",
                f"rate={SINK_RATE_HZ}",
                "channels=1",
                "format=float32le",  # the enhanced signal reaches applications unquantised
                f"sink_properties='device.description=\"fsnet-internal:{self.source_name}\" {owner}'",
            )
            self._load(
                "module-remap-source",
                f"master={self.sink_name}.monitor",
                f"source_name={self.source_name}",
                "channels=1",
                "format=float32le",
                f"source_properties='device.description=\"{self.name}\" {owner}'",
            )
            self._check_not_default_source()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self, module: str, *arguments: str) -> None:
        try:
            index = self.pactl("load-module", module, *arguments).strip()
        except FsnetError as exc:
            raise FsnetError(f"the sound server refused to load {module}: {exc}") from None
        self.modules.append(index)

    def close(self) -> None:
        """Unload what this run loaded (the source first: it records from the sink)."""
        while self.modules:
            index = self.modules.pop()
            try:
                self.pactl("unload-module", index)
            except FsnetError:
                pass  # server gone or module already unloaded: nothing left to remove

    def remove_stale(self) -> list[str]:
        """Unload fsnet modules whose owner process is dead; returns their indices."""
        removed = []
        # the short listing: pactl 16's JSON of modules leaves out their index
        for line in self.pactl("list", "modules", "short").splitlines():
            index, _, argument = (line.split("\t") + ["", ""])[:3]
            match = _OWNER.search(argument)
            if match and not _pid_alive(int(match.group(1))):
                try:
                    self.pactl("unload-module", index)
                    removed.append(index)
                except FsnetError:
                    pass  # already gone with its sink
        return removed

    def _check_name_free(self) -> None:
        for source in self.pactl.listing("sources"):
            description = source.get("description")
            if source.get("name") == self.source_name or description == self.name:
                props = source.get("properties") or {}
                owner = props.get(OWNER_KEY)
                who = f"another fsnet run (pid {owner})" if owner else f"'{source.get('name')}'"
                raise FsnetError(
                    f"a source named '{self.name}' already exists ({who}); choose another --name"
                )
        for sink in self.pactl.listing("sinks"):
            if sink.get("name") == self.sink_name:
                raise FsnetError(f"a sink '{self.sink_name}' already exists; choose another --name")

    def _check_not_default_source(self) -> None:
        # the default input would then be our own output: a loop, not a microphone
        if self.pactl("get-default-source").strip() in (
            self.source_name,
            f"{self.sink_name}.monitor",
        ):
            raise FsnetError(
                f"the server made '{self.name}' its default source, so the default input would "
                "be fsnet's own output; choose the real microphone with --input-device"
            )


def run_virtual_mic(args, stop, undo) -> int:
    """``--mic`` with the output going to a :class:`VirtualMic`'s sink instead of the speakers.

    PortAudio reaches PulseAudio through ALSA's ``pulse`` plugin (libasound2-plugins), which plays
    to the sink named by ``PULSE_SINK`` (read when the stream opens); the device ``pulse`` is used
    when PortAudio lists it, else the default one (which is the plugin on a PulseAudio/PipeWire
    desktop).
    """
    from fsnet.live.devices import import_sounddevice
    from fsnet.live.mic_mode import run_mic

    mic = undo.enter_context(VirtualMic(args.name))
    previous = os.environ.get("PULSE_SINK")
    os.environ["PULSE_SINK"] = mic.sink_name
    undo.callback(_restore_env, "PULSE_SINK", previous)
    sd = import_sounddevice()
    pulse = [d for d in sd.query_devices() if d["name"] == "pulse" and d["max_output_channels"]]
    if pulse:
        args.output_device = str(pulse[0]["index"])
    args.output_channels = args.output_channels or 1
    print(
        f"virtual microphone: '{mic.name}' (source {mic.source_name}); pick it as the "
        "microphone in other applications",
        file=sys.stderr,
        flush=True,
    )
    gone = threading.Event()
    undo.enter_context(_Watch(mic, gone))
    return run_mic(args, stop, undo, output_gone=gone)


class _Watch:
    """Sets ``gone`` when the virtual source disappears from the server: the server would move
    the program's stream to another sink (the speakers) instead of failing it."""

    def __init__(self, mic: VirtualMic, gone: threading.Event, period_s: float = 2.0) -> None:
        self.mic, self.gone, self.period_s = mic, gone, period_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name="fsnet-virtual-mic-watch", daemon=True
        )

    def __enter__(self) -> _Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopping.wait(self.period_s):
            try:
                sources = self.mic.pactl("list", "short", "sources")
            except FsnetError:  # the server is gone: so is the device
                sources = ""
            if not any(
                line.split("\t")[1:2] == [self.mic.source_name] for line in sources.splitlines()
            ):
                self.gone.set()
                return


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
