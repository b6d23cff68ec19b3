"""Live latency and CPU: a sample call played into virtual devices, prompts timed on the page.

What the agent feels, on this machine, with the bundled engine:

* **end of speech -> prompt on the page**: for each prompt that opens, the time from the
  end of the last utterance in the *played* audio before it (the sample's script gives
  every utterance's end; playback starts at a stamped wall time) to its ``prompt_open``
  message reaching the page (headless Chromium; Playwright stamps each WebSocket frame
  the page receives);
* **the coach's own share**: from the recognizer's final result for the utterance that
  opened the prompt (``Pipeline.on_heard``) to the prompt on the page: merging,
  scoring, playbook, bus, overlay server, WebSocket and the page's render;
* **CPU per live call**: process and recognizer-process CPU seconds over the call's
  wall time, as a share of this machine's cores.

    python benchmarks/bench_live.py [--call examples/abusive.wav]

Needs what the tests need (PulseAudio, the ALSA pulse plugin, chromium:
``scripts/install_system_deps.sh``). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# Stamps every WebSocket message when the page receives it (epoch ms, sub-ms resolution).
_STAMP = """
window.__frames = [];
const Native = window.WebSocket;
window.WebSocket = function (...args) {
  const ws = new Native(...args);
  ws.addEventListener('message', (ev) => window.__frames.push([ev.data, performance.timeOrigin + performance.now()]));
  return ws;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
"""


def _opened(frames: list) -> list[tuple[str, float, float]]:
    """(prompt, call time t, epoch seconds the page received it) of every prompt_open."""
    out = []
    for data, ms in frames:
        try:
            msg = json.loads(data)
        except (TypeError, ValueError):
            continue
        for m in (msg if isinstance(msg, list) else [msg]):
            if isinstance(m, dict) and m.get("type") == "prompt_open":
                out.append((m["prompt"], float(m["t"]), ms / 1000.0))
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def _cpu() -> float:
    """CPU seconds of this process (coach threads, overlay server) and of its recognizer
    processes; not the browser, players or PulseAudio daemon (the test rig)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    total = me.ru_utime + me.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid() and b"multiprocessing" in cmd:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--call", default=str(REPO / "coach" / "examples" / "escalating.wav"),
                    help="a stereo sample call (agent left) with a script .json beside it")
    args = ap.parse_args(argv)
    import soundfile as sf
    from playwright.sync_api import sync_playwright
    from pulse import PulseAudio

    from coach.session import Session, Settings

    call = Path(args.call)
    script = json.loads(call.with_suffix(".json").read_text())["segments"]
    ends = sorted(float(s["end"]) for s in script)
    pa = PulseAudio().start()
    pa.activate()
    tmp = Path(tempfile.mkdtemp(prefix="coach-bench-live-"))
    x, rate = sf.read(str(call), dtype="int16")
    sf.write(str(tmp / "agent.wav"), x[:, 0], rate)
    sf.write(str(tmp / "customer.wav"), x[:, 1], rate)
    heard: dict[tuple[str, float], float] = {}  # (speaker, end) -> epoch the recognizer finished it

    session = Session(Settings(call="", live=True, agent_device="coach_agent", customer_device="coach_customer",
                               port=0, partials=True, speed="realtime", timeline=False),
                      status=lambda m: print(f"  [coach] {m}", file=sys.stderr))
    session.on_heard = lambda u: heard.setdefault((u.speaker.value, round(u.end, 3)), time.time())
    session.load()
    runner = threading.Thread(target=session.run, daemon=True)
    cpu0, wall0 = _cpu(), time.monotonic()
    runner.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 380, "height": 700})
            page.add_init_script(_STAMP)
            page.goto(session.overlay.url)
            page.wait_for_selector("#conn[data-state=open]", state="attached", timeout=10_000)
            time.sleep(1.0)
            e0 = time.time()
            players = [pa.play("coach_agent", tmp / "agent.wav", wait=False),
                       pa.play("coach_customer", tmp / "customer.wav", wait=False)]
            for pl in players:
                pl.wait(600)
            time.sleep(3.0)
            shown = _opened(page.evaluate("window.__frames"))
            browser.close()
        call_wall = time.monotonic() - wall0
        cpu = _cpu() - cpu0  # before the recognizer processes exit
    finally:
        session.stop()
        runner.join(5)
        session.close()
        pa.stop()
    e2e, share = [], []
    for pid, t, at in shown:
        played = [e for e in ends if e0 + e <= at]
        if played:
            e2e.append(at - (e0 + played[-1]))
        # A prompt opens at the end time t of the utterance that opened it: the coach's
        # share starts when the recognizer finished that utterance.
        h = [v for (_spk, end), v in heard.items() if abs(end - t) < 1e-3]
        if h:
            share.append(at - min(h))
    ncpu = os.cpu_count() or 1
    print(f"live call {call.name}: {len(shown)} prompts opened on the page ({', '.join(p for p, _, _ in shown)})")
    print(f"end of speech in the played audio -> prompt on the page: p50 {_pct(e2e, .5):.2f} s, "
          f"p95 {_pct(e2e, .95):.2f} s, max {max(e2e, default=float('nan')):.2f} s (n={len(e2e)}; target p95 <= 1.5 s)")
    print(f"coach's own share (recognizer final -> page): p50 {1000 * _pct(share, .5):.0f} ms, "
          f"p95 {1000 * _pct(share, .95):.0f} ms (n={len(share)}; target p95 <= 150 ms)")
    print(f"CPU: {cpu:.1f} s over {call_wall:.1f} s of call = {100 * cpu / call_wall / ncpu:.0f}% of {ncpu} cores "
          f"(headroom {100 - 100 * cpu / call_wall / ncpu:.0f}%)")


if __name__ == "__main__":
    main()
