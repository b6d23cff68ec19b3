"""``coach devices``: the input devices ``coach live`` can record from."""
from __future__ import annotations

import argparse
import sys

from ..sinks import safe_text


def cmd_devices(args: argparse.Namespace) -> int:
    from ..capture import list_devices
    from ..errors import AudioError
    devices = list_devices()
    if not devices:
        raise AudioError("no audio input devices found",
                         "connect a headset or start PulseAudio (PortAudio lists ALSA, PulseAudio and JACK devices)")
    width = max(len("name"), *(len(safe_text(d.name)) for d in devices))
    rows = [f"  {'#':>3}  {'name':<{width}}  {'host API':<10} {'inputs':>6}  default rate"]
    for d in devices:
        mark = "*" if d.is_default else " "
        rows.append(f"{mark} {d.index:>3}  {safe_text(d.name):<{width}}  {safe_text(d.host_api):<10} "
                    f"{d.max_input_channels:>6}  {d.default_samplerate:.0f} Hz")
    rows.append("* default input. Pass a device's index or name (a unique part of it) to `coach live`.")
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


def register(sub) -> None:
    c = sub.add_parser("devices", help="list the audio input devices (index, name, host API, channels, rate)")
    c.set_defaults(func=cmd_devices)
