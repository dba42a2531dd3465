"""Media bench: server CPU per WHEP viewer, CPU of the HLS encode, glass-to-glass latency of
WHEP and HLS, measured against a real server process (``run_server.py``) with real aiortc
peers in this process.

    .venv/bin/python -m bench.media_bench [--port 8310] [--width 640 --height 360]
                                          [--viewers 1,4] [--seconds 10] [--json out.json]

The synthetic camera draws a frame counter into its pixels (big black/white blocks that
survive VP8/H.264) and remembers when each frame left it; a receiver reads the counter back,
so latency is measured on the picture itself ("glass to glass", minus a real camera/screen).
Server CPU is read from /proc/<pid>/stat of the server process only (its embedded
redis-server is a separate process and not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import av
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.media_support import ColourCamera, Publisher, Viewer, close_all, play, publish, read_counter
from tests.support import Api, spawn_server, wait_healthy

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure_cpu(pid: int, seconds: float) -> float:
    """Average CPU of ``pid`` over ``seconds``, in percent of one core."""
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": round(pct(ms, 50)), "p95": round(pct(ms, 95)), "min": round(min(ms or [0])),
            "max": round(max(ms or [0]))}


def whep_latencies(viewer: Viewer, camera: ColourCamera, since: float) -> list[float]:
    out = []
    for t, img in viewer.received:
        if t < since:
            continue
        sent = camera.sent.get(read_counter(img))
        if sent is not None and 0 <= t - sent < 10:
            out.append(1000 * (t - sent))
    return out


async def hls_latencies(api: Api, room_id: str, camera: ColourCamera, seconds: float) -> dict[str, Any]:
    """Poll the live playlist like a player would (every 100 ms); for each new segment, the age
    of its frames when the segment became fetchable, and the age of its newest frame."""
    seen: set[str] = set()
    frame_ms: list[float] = []
    edge_ms: list[float] = []
    first = True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = await api.get(f"/live/{room_id}/index.m3u8")
        names = re.findall(r"^seg_\S+\.ts$", body.decode(), re.M) if status == 200 else []
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            if first:  # segments listed before we started polling say nothing about latency
                continue
            status, seg = await api.get(f"/live/{room_id}/{name}")
            now = time.time()
            if status != 200:
                continue
            with av.open(io.BytesIO(seg), mode="r", format="mpegts") as c:
                numbers = [read_counter(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
            ages = [1000 * (now - camera.sent[n]) for n in numbers if n in camera.sent]
            ages = [a for a in ages if 0 <= a < 30000]
            if ages:
                frame_ms.extend(ages)
                edge_ms.append(min(ages))
        first = False
        await asyncio.sleep(0.1)
    return {"frame_age_ms": summary(frame_ms), "live_edge_ms": summary(edge_ms), "segments": len(edge_ms)}


async def run_server(port: int, data_dir: str, hls: bool) -> Any:
    env = {"LIVE_DATA_DIR": data_dir, "LIVE_HLS_ENABLED": "true" if hls else "false",
           "LIVE_WHEP_MAX_VIEWERS": "200", "LIVE_LOG_LEVEL": "WARNING", "LIVE_SECRET": "bench-" + "x" * 26}
    proc = spawn_server(port, env)
    await wait_healthy(f"http://127.0.0.1:{port}")
    return proc


async def stop_server(proc: Any) -> None:
    proc.terminate()
    with contextlib.suppress(Exception):
        await asyncio.to_thread(proc.wait, 20)


async def scenario(args: argparse.Namespace, hls: bool) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="live-media-bench-")
    proc = await run_server(args.port, data_dir, hls)
    url = f"http://127.0.0.1:{args.port}"
    result: dict[str, Any] = {"hls_enabled": hls}
    pub: Publisher | None = None
    viewers: list[Viewer] = []
    try:
        async with Api(url) as api:
            s = await api.streamer(f"bench_{uuid.uuid4().hex[:8]}")
            room = await api.live_room(s["token"], "bench")
            camera = ColourCamera((40, 120, 200), args.width, args.height, counter=True)
            pub = await publish(api, room["id"], s["token"], camera)
            await asyncio.sleep(args.warmup)
            result["publisher_cpu_pct"] = round(await measure_cpu(proc.pid, args.seconds), 1)
            if hls:
                result["hls_latency"] = await hls_latencies(api, room["id"], camera, args.seconds)
                return result
            per_viewer = {}
            for n in args.viewers:
                while len(viewers) < n:
                    viewers.append(await play(api, room["id"], keep=len(viewers) == 0))
                await asyncio.sleep(args.warmup)
                since = time.time()
                viewers[0].frames = 0
                cpu = await measure_cpu(proc.pid, args.seconds)
                per_viewer[str(n)] = {"server_cpu_pct": round(cpu, 1),
                                      "per_viewer_pct": round((cpu - result["publisher_cpu_pct"]) / n, 1),
                                      "frames_per_s_first_viewer": round(viewers[0].frames / max(1e-9, time.time()
                                                                          - since), 1)}
                if n == args.viewers[0]:
                    result["whep_latency_ms"] = summary(whep_latencies(viewers[0], camera, since))
                    viewers[0].keep = False
                    viewers[0].received.clear()
            result["whep"] = per_viewer
            return result
    finally:
        await close_all(*viewers, pub)
        await stop_server(proc)


async def main() -> None:
    """Parse the arguments, run both scenarios, print (and optionally save) the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8310, help="server port (8300-8349 on the shared box)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--viewers", default="1,4", help="WHEP viewer counts to measure, ascending")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    args.viewers = [int(x) for x in args.viewers.split(",")]
    out: dict[str, Any] = {"resolution": f"{args.width}x{args.height}", "fps": 30, "cores": os.cpu_count(),
                           "loadavg_before": os.getloadavg()[0]}
    out["whep"] = await scenario(args, hls=False)
    out["hls"] = await scenario(args, hls=True)
    # Other work on the machine inflates latency (not CPU seconds): say how busy it was.
    out["loadavg_after"] = os.getloadavg()[0]
    out["hls_encode_cpu_pct"] = round(out["hls"]["publisher_cpu_pct"] - out["whep"]["publisher_cpu_pct"], 1)
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, text)
    print(f"WHEP latency p50 {out['whep']['whep_latency_ms']['p50']} ms; HLS newest frame "
          f"{out['hls']['hls_latency']['live_edge_ms']['p50']} ms old when its segment is listed", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
