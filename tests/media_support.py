"""Real aiortc peers for the media tests and the bench: a synthetic camera, a WHIP publisher
and a WHEP viewer, speaking to the server over HTTP exactly as a browser or OBS would."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import VideoFrame
from PIL import Image

from tests.support import Api, ApiError

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)

# A frame counter drawn as big black/white blocks survives lossy video coding: 20 bits in a
# 5 x 4 grid of blocks in the top part of the picture (the rest shows the camera colour).
COUNTER_BITS = 20
GRID_COLS, GRID_ROWS = 5, 4


class ColourCamera(VideoStreamTrack):
    """A synthetic camera: solid ``colour`` frames at 30 fps; set ``colour`` to switch.

    With ``counter=True`` each frame also carries its number in pixels, and ``sent`` maps
    that number to the wall-clock time the frame left the camera (glass-to-glass latency).
    """

    def __init__(self, colour: tuple[int, int, int] = RED, width: int = 320, height: int = 240,
                 counter: bool = False) -> None:
        super().__init__()
        self.colour = colour
        self.width, self.height = width, height
        self.counter = counter
        self.sent: dict[int, float] = {}
        self.frames = 0
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def _canvas(self) -> np.ndarray:
        base = self._cache.get(self.colour)
        if base is None:
            base = np.empty((self.height, self.width, 3), np.uint8)
            base[:, :] = self.colour
            self._cache[self.colour] = base
        return base

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        n = self.frames
        self.frames += 1
        img = self._canvas()
        if self.counter:
            img = img.copy()
            draw_counter(img, n)
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        if self.counter:
            self.sent[n] = time.time()
        return frame


def _blocks(width: int, height: int) -> tuple[int, int]:
    return width // GRID_COLS, (height // 2) // GRID_ROWS


def draw_counter(img: np.ndarray, n: int) -> None:
    """Draw ``n`` as COUNTER_BITS black/white blocks in the top half of ``img`` (in place)."""
    bw, bh = _blocks(img.shape[1], img.shape[0])
    for bit in range(COUNTER_BITS):
        r, c = divmod(bit, GRID_COLS)
        img[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = 255 if (n >> bit) & 1 else 0


def read_counter(img: np.ndarray) -> int:
    """The number ``draw_counter`` drew, read from the centre of each block."""
    bw, bh = _blocks(img.shape[1], img.shape[0])
    n = 0
    for bit in range(COUNTER_BITS):
        r, c = divmod(bit, GRID_COLS)
        cell = img[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        if cell.mean() > 127:
            n |= 1 << bit
    return n


def mean_colour(img: np.ndarray) -> tuple[float, float, float]:
    """Mean RGB of the bottom half (below any counter blocks)."""
    h = img.shape[0]
    m = img[h // 2 + 4:].reshape(-1, 3).mean(axis=0)
    return float(m[0]), float(m[1]), float(m[2])


def close_to(colour: tuple[float, float, float], want: tuple[int, int, int], tol: float = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(colour, want, strict=True))


def jpeg_colour(data: bytes) -> tuple[float, float, float]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return mean_colour(np.asarray(im.convert("RGB")))


def new_pc() -> RTCPeerConnection:
    # No STUN: host candidates over loopback are enough, and there is no internet here.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def wait_state(pc: RTCPeerConnection, states: tuple[str, ...], timeout: float = 10) -> str:
    """Wait until ``pc.connectionState`` is one of ``states``; returns it."""
    deadline = time.monotonic() + timeout
    while pc.connectionState not in states:
        if time.monotonic() > deadline:
            raise TimeoutError(f"connectionState stayed {pc.connectionState!r}, wanted {states}")
        await asyncio.sleep(0.05)
    return pc.connectionState


@dataclass
class Publisher:
    pc: RTCPeerConnection
    camera: ColourCamera
    location: str
    answer: str

    async def close(self) -> None:
        await self.pc.close()


async def whip_offer(camera: MediaStreamTrack) -> tuple[RTCPeerConnection, str]:
    pc = new_pc()
    pc.addTransceiver(camera, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate (non-trickle)
    return pc, pc.localDescription.sdp


async def publish(api: Api, room_id: str, token: str, camera: ColourCamera | None = None) -> Publisher:
    """WHIP-publish ``camera`` to the room; raises on a non-201 answer (after closing the pc)."""
    camera = camera or ColourCamera()
    pc, offer = await whip_offer(camera)
    status, body, headers = await sdp_post(api, f"/api/rooms/{room_id}/whip", offer, token)
    if status != 201:
        await pc.close()
        raise SdpError(status, body)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return Publisher(pc, camera, headers["Location"], body)


@dataclass
class Viewer:
    """A WHEP viewer that keeps every received frame's time and the newest frame."""

    pc: RTCPeerConnection
    location: str
    frames: int = 0
    latest: np.ndarray | None = None
    received: list[tuple[float, np.ndarray]] = field(default_factory=list)
    keep: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, VideoFrame):
                    continue
                now = time.time()
                img = frame.to_ndarray(format="rgb24")
                self.frames += 1
                self.latest = img
                if self.keep:
                    self.received.append((now, img))
        except MediaStreamError:
            self.ended.set()

    async def wait_colour(self, want: tuple[int, int, int], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.latest is None or not close_to(mean_colour(self.latest), want):
            if time.monotonic() > deadline:
                got = None if self.latest is None else mean_colour(self.latest)
                raise TimeoutError(f"viewer never showed {want}; last colour {got}, frames {self.frames}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.pc.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def play(api: Api, room_id: str, token: str | None = None, keep: bool = False) -> Viewer:
    """WHEP-play the room's video; raises ``SdpError`` on a non-201 answer."""
    pc = new_pc()
    pc.addTransceiver("video", direction="recvonly")
    viewer = Viewer(pc, "", keep=keep)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            viewer.tasks.append(asyncio.create_task(viewer.consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    status, body, headers = await sdp_post(api, f"/api/rooms/{room_id}/whep", pc.localDescription.sdp, token)
    if status != 201:
        await viewer.close()
        raise SdpError(status, body)
    viewer.location = headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return viewer


class SdpError(ApiError):
    """A WHIP/WHEP request that did not get its 201 answer."""


async def sdp_post(api: Api, path: str, sdp: str, token: str | None = None,
                   content_type: str = "application/sdp") -> tuple[int, Any, dict[str, str]]:
    """POST an SDP offer; returns (status, answer text or JSON error, headers)."""
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with api.session.post(api.base + path, data=sdp.encode(), headers=headers) as r:
        body: Any = await r.json() if "json" in r.headers.get("Content-Type", "") else await r.text()
        return r.status, body, dict(r.headers)


async def close_all(*things: Any) -> None:
    """Close publishers and viewers, ignoring ones already closed."""
    for t in things:
        if t is not None:
            with contextlib.suppress(Exception):
                await t.close()
