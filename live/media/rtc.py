"""Live video on aiortc: WHIP ingest, WHEP playback through ``MediaRelay``, HLS, snapshots.

Everything media lives behind ``MediaService`` (publish / unpublish / play / stop_play /
latest_jpeg / stop_room / close), so an external SFU can later replace the aiortc path
without the rooms or flash-buy code noticing.

Shape of one room on this process::

    publisher pc ──remote tracks──▶ pump tasks ──▶ LiveSource (video, audio) ──▶ MediaRelay
                                      │ latest frame (snapshot.jpg)              ├─▶ WHEP viewer pcs
                                                                                 └─▶ HLS encoder

``LiveSource`` is the room's continuous track: publishers come and go (a new publish replaces
the old one, a phone reconnects after ICE failure) while WHEP viewers and the HLS encoder keep
reading the same relay, with timestamps rewritten to run on without jumps.

Limits (see docs/media.md): aiortc decodes the incoming stream and re-encodes it once per
WHEP viewer, so WHEP is capped per process (``whep_max_viewers``) and big audiences go to HLS.
A publisher's media lives in the process that took its WHIP POST; a WHEP request or snapshot
reaching another process is answered 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from av.audio.frame import AudioFrame
from av.frame import Frame
from av.video.frame import VideoFrame

from live.core.errors import Invalid, NotFound, Unavailable, log_loop_error
from live.core.metrics import Metrics
from live.core.settings import Settings
from live.media.hls import PLAYLIST, HlsEncoder, hls_file, remove_dir

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)

NEGOTIATE_TIMEOUT_S = 10.0  # offer → answer, including ICE gathering (non-trickle)
CONNECT_TIMEOUT_S = 20.0  # a peer that never connects is closed after this
CLOSE_TIMEOUT_S = 5.0
# A publisher lost to ICE failure (not a DELETE) leaves the room's viewers and HLS waiting
# this long for the streamer to reconnect, so a network blip does not drop the audience.
REPUBLISH_GRACE_S = 15.0
ROOM_CHECK_S = 5.0  # how often rooms with a publisher here are checked for having ended elsewhere
SWEEP_S = 1.0
MAX_GAP_S = 5.0  # a timestamp jump larger than this inside one stream is treated as a restart
JPEG_QUALITY = 88
ROOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def hls_url(room_id: str) -> str:
    """Where the room's HLS playlist is served (the pointer that WHEP overflow answers carry)."""
    return f"/live/{room_id}/{PLAYLIST}"


class LiveSource(MediaStreamTrack):
    """A room's continuous track of one kind, fed by whichever publisher is current.

    Holds only the newest frame (one reader, the relay): memory stays bounded and a slow
    reader gets fresh frames, never a backlog. Timestamps are rewritten onto one timeline
    that only moves forwards, across publisher changes and RTP restarts.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self._ended = False
        self._epoch: object = None
        self._time_base: fractions.Fraction | None = None
        self._last_in = 0
        self._last_out: int | None = None
        self._last_wall = 0.0

    def feed(self, frame: Frame, epoch: object) -> None:
        """Offer ``frame`` from the publisher ``epoch`` (any object naming the stream)."""
        if self._ended or frame.pts is None or frame.time_base is None:
            return
        tb = fractions.Fraction(frame.time_base.numerator, frame.time_base.denominator)
        if self._time_base is None:
            self._time_base = tb
        pts = int(frame.pts * tb / self._time_base)
        if isinstance(frame, AudioFrame):
            step = max(1, int(frame.samples * fractions.Fraction(1, frame.sample_rate or 48000) / self._time_base))
        else:
            step = max(1, int(fractions.Fraction(1, 30) / self._time_base))
        now = time.monotonic()
        if self._last_out is None:
            out = 0
        else:
            delta = pts - self._last_in
            if epoch is not self._epoch or not 0 < delta <= MAX_GAP_S / self._time_base:
                # A new publisher or a restarted stream: continue after the time that really
                # passed, so receivers' clocks (RTP, HLS) stay in step with the wall clock.
                delta = max(step, int(fractions.Fraction(now - self._last_wall) / self._time_base))
            out = self._last_out + delta
        self._epoch, self._last_in, self._last_out, self._last_wall = epoch, pts, out, now
        frame.pts = out
        frame.time_base = self._time_base
        self._frame = frame
        self._ready.set()

    async def recv(self) -> Frame:
        """The next frame; ``MediaStreamError`` once the source has ended."""
        while True:
            if self._ended:
                raise MediaStreamError
            await self._ready.wait()
            self._ready.clear()
            frame, self._frame = self._frame, None
            if frame is not None and not self._ended:
                return frame

    def end(self) -> None:
        """End the track: the relay, and through it every viewer and the HLS encoder, stop."""
        self._ended = True
        self._frame = None
        self._ready.set()
        self.stop()


@dataclass(eq=False)
class _Peer:
    """One peer connection: a WHIP publisher or a WHEP viewer."""

    id: str
    room_id: str
    kind: str  # "whip" | "whep"
    pc: RTCPeerConnection
    created: float = field(default_factory=time.monotonic)
    connected: bool = False
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closing: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    async def close(self) -> None:
        """Stop its tasks and close the peer connection; every caller waits for the same close."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(), name=f"media-close:{self.kind}:{self.id[:8]}")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.pc.close()
        except TimeoutError:
            log.warning("closing %s peer %s timed out", self.kind, self.id)
        for track in self.tracks:
            track.stop()


@dataclass(eq=False)
class _Room:
    """The media of one room on this process."""

    id: str
    video: LiveSource = field(default_factory=lambda: LiveSource("video"))
    audio: LiveSource = field(default_factory=lambda: LiveSource("audio"))
    relay: MediaRelay = field(default_factory=MediaRelay)
    publisher: _Peer | None = None
    viewers: dict[str, _Peer] = field(default_factory=dict)
    hls: HlsEncoder | None = None
    orphaned_at: float | None = None  # when the publisher was lost, for the republish grace
    checked_at: float = field(default_factory=time.monotonic)
    # The newest decoded video frame, and its JPEG once somebody asked (cached per frame).
    frame: VideoFrame | None = None
    seq: int = 0
    jpeg: tuple[int, bytes] | None = None
    jpeg_lock: threading.Lock = field(default_factory=threading.Lock)


class MediaService:
    """WebRTC ingest and playback on this process (aiortc), plus HLS and snapshots."""

    def __init__(self, settings: Settings, metrics: Metrics, rooms: Any = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._rooms_svc = rooms  # to notice rooms ended by another process
        self._ice = [RTCIceServer(urls=u) for u in settings.ice_servers]
        self._hls_root = settings.data_dir / "hls"
        self._rooms: dict[str, _Room] = {}
        self._peers: dict[str, _Peer] = {}
        self._pending_viewers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- the interface -----------------------------------------------------------------
    async def publish(self, room_id: str, offer_sdp: str) -> tuple[str, str]:
        """Take a WHIP offer for ``room_id``; returns (session_id, answer_sdp).

        A new publisher replaces the current one: viewers and HLS carry on with the new picture.
        """
        self._check_open()
        _check_room_id(room_id)
        offer, _ = _parse_offer(offer_sdp, sending=True)
        peer = _Peer(id=secrets.token_hex(16), room_id=room_id, kind="whip", pc=self._new_pc())
        remote: dict[str, MediaStreamTrack] = {}

        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            remote.setdefault(track.kind, track)

        answer = await self._negotiate(peer, offer)
        if "video" not in remote:
            await peer.close()
            raise Invalid("the offer sends no video")
        if self._closed:
            await peer.close()
            raise Unavailable("the server is shutting down")
        # From here to the end of the swap nothing awaits: no other task sees a half state.
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
            self._start_hls(room, audio="audio" in remote)
        old = room.publisher
        room.publisher, room.orphaned_at = peer, None
        peer.tracks = list(remote.values())
        for kind, track in remote.items():
            source = room.video if kind == "video" else room.audio
            peer.tasks.append(asyncio.create_task(self._pump(room, track, source, peer),
                                                  name=f"media-pump:{kind}:{room_id}"))
        self._peers[peer.id] = peer
        self._watch(peer)
        self._gauges()
        if old is not None:
            self._peers.pop(old.id, None)
            await old.close()
        log.info("room %s: publisher %s%s", room_id, peer.id[:8], " (replaced one)" if old else "")
        return peer.id, answer

    async def unpublish(self, room_id: str, session_id: str) -> None:
        """End a WHIP session: the publisher, its viewers and its HLS stream stop."""
        peer = self._peers.get(session_id)
        if peer is None or peer.kind != "whip" or peer.room_id != room_id:
            raise NotFound("no such publishing session")
        await self._drop_publisher(peer, grace=False)

    async def play(self, room_id: str, offer_sdp: str) -> tuple[str, str]:
        """Take a WHEP offer for ``room_id``; returns (session_id, answer_sdp)."""
        self._check_open()
        offer, kinds = _parse_offer(offer_sdp, sending=False)
        room = self._rooms.get(room_id)
        if room is None or room.publisher is None:
            raise NotFound("no live video for this room on this server")
        cap = self._settings.whep_max_viewers
        if self._viewers() + self._pending_viewers >= cap:
            extra = {"hls": hls_url(room_id)} if self._settings.hls_enabled else {}
            raise Unavailable(f"WebRTC playback is full here ({cap} viewers); watch over HLS", **extra)
        self._pending_viewers += 1  # hold the slot while negotiating
        try:
            peer = _Peer(id=secrets.token_hex(16), room_id=room_id, kind="whep", pc=self._new_pc())
            for kind, source in (("video", room.video), ("audio", room.audio)):
                if kind in kinds:
                    # Unbuffered: a viewer that falls behind skips to the newest frame instead
                    # of queueing; one slow viewer never grows memory or stalls the room.
                    track = room.relay.subscribe(source, buffered=False)
                    peer.tracks.append(track)
            answer = await self._negotiate(peer, offer, send=peer.tracks)
        finally:
            self._pending_viewers -= 1
        if self._rooms.get(room_id) is not room or room.publisher is None or self._closed:
            await peer.close()
            raise NotFound("the live video ended")
        room.viewers[peer.id] = peer
        self._peers[peer.id] = peer
        self._watch(peer)
        self._gauges()
        return peer.id, answer

    async def stop_play(self, room_id: str, session_id: str) -> None:
        """End a WHEP session."""
        peer = self._peers.get(session_id)
        if peer is None or peer.kind != "whep" or peer.room_id != room_id:
            raise NotFound("no such playback session")
        await self._drop_viewer(peer)

    def latest_jpeg(self, room_id: str) -> bytes | None:
        """The newest decoded frame as JPEG; None if the room has no live video here.

        Encodes lazily, at most once per frame. CPU-bound (milliseconds for 720p): async
        callers should run it in a thread, ``await asyncio.to_thread(media.latest_jpeg, id)``.
        """
        room = self._rooms.get(room_id)
        if room is None or room.publisher is None:
            return None
        frame, seq = room.frame, room.seq
        if frame is None:
            return None
        with room.jpeg_lock:
            if room.jpeg is not None and room.jpeg[0] == seq:
                return room.jpeg[1]
            buf = io.BytesIO()
            frame.to_image().save(buf, format="JPEG", quality=JPEG_QUALITY)
            room.jpeg = (seq, buf.getvalue())
            return room.jpeg[1]

    async def stop_room(self, room_id: str) -> None:
        """The room ended: close its publisher, viewers and HLS, and remove its HLS files."""
        room = self._rooms.get(room_id)
        if room is not None:
            await self._teardown(room)
        if ROOM_ID_RE.match(room_id):
            await asyncio.to_thread(remove_dir, self._hls_root / room_id)

    async def close(self) -> None:
        """Shutdown: every peer connection, relay and encoder closed; no task left behind."""
        self._closed = True
        rooms = list(self._rooms.values())
        await asyncio.gather(*(self._teardown(r) for r in rooms), return_exceptions=True)
        await asyncio.gather(*(p.close() for p in list(self._peers.values())), return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT_S)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(remove_dir, self._hls_root / r.id) for r in rooms))

    # --- more for transports and tests -------------------------------------------------
    def hls_path(self, room_id: str, name: str) -> Path | None:
        """The file behind ``/live/{room_id}/{name}``, or None for a name that is not ours."""
        if not ROOM_ID_RE.match(room_id):
            return None
        return hls_file(self._hls_root, room_id, name)

    def publishing_rooms(self) -> list[str]:
        """Rooms with a connected publisher on this process (they are hosted: see rooms)."""
        return [room_id for room_id, r in self._rooms.items() if r.publisher is not None]

    def stats(self) -> dict[str, Any]:
        """What this process carries right now (for tests and the bench)."""
        return {
            "rooms": len(self._rooms),
            "publishers": sum(1 for r in self._rooms.values() if r.publisher is not None),
            "viewers": self._viewers(),
            "peers": len(self._peers),
            "tasks": len(self._tasks),
            "hls_frames": {r.id: (r.hls.frames, r.hls.audio_frames) for r in self._rooms.values()
                           if r.hls is not None},
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Background sweep: peers that never connect, publishers that never come back,
        rooms ended on another process."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_S)
            if stop.is_set():
                return
            try:
                await self._sweep()
            except Exception as e:
                log_loop_error(log, "media sweep failed", e)

    # --- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the server is shutting down")

    def _viewers(self) -> int:
        return sum(len(r.viewers) for r in self._rooms.values())

    def _gauges(self) -> None:
        self._metrics.publishers.set(sum(1 for r in self._rooms.values() if r.publisher is not None))
        self._metrics.whep_viewers.set(self._viewers())

    def _new_pc(self) -> RTCPeerConnection:
        # An explicit (possibly empty) list: aiortc's default would add a public STUN server.
        return RTCPeerConnection(RTCConfiguration(iceServers=list(self._ice)))

    async def _negotiate(self, peer: _Peer, offer: RTCSessionDescription,
                         send: Iterable[MediaStreamTrack] = ()) -> str:
        """Answer ``offer`` on ``peer.pc`` with every ICE candidate in it (non-trickle)."""
        pc = peer.pc
        try:
            async with asyncio.timeout(NEGOTIATE_TIMEOUT_S):
                await pc.setRemoteDescription(offer)
                for track in send:
                    pc.addTrack(track)
                # aiortc's setLocalDescription returns once ICE gathering is complete.
                await pc.setLocalDescription(await pc.createAnswer())
        except TimeoutError as e:
            await peer.close()
            raise Unavailable("negotiation timed out") from e
        except Exception as e:
            await peer.close()
            raise Invalid(f"cannot answer this offer: {e or type(e).__name__}") from e
        return pc.localDescription.sdp

    def _watch(self, peer: _Peer) -> None:
        @peer.pc.on("connectionstatechange")
        def changed() -> None:
            state = peer.pc.connectionState
            if state == "connected":
                peer.connected = True
            elif state in ("failed", "closed") and not peer.closing:
                log.info("%s peer %s of room %s: %s", peer.kind, peer.id[:8], peer.room_id, state)
                self._spawn(self._lost(peer))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lost(self, peer: _Peer) -> None:
        if peer.kind == "whip":
            await self._drop_publisher(peer, grace=True)
        else:
            await self._drop_viewer(peer)

    async def _pump(self, room: _Room, track: MediaStreamTrack, source: LiveSource, peer: _Peer) -> None:
        """Move a publisher's decoded frames into the room; the video pump keeps the newest frame."""
        video = track.kind == "video"
        try:
            while True:
                frame = await track.recv()
                if room.publisher is not peer:
                    return
                if not isinstance(frame, Frame):
                    continue
                if video and isinstance(frame, VideoFrame):
                    room.frame, room.seq = frame, room.seq + 1
                source.feed(frame, peer)
                if isinstance(frame, AudioFrame) and room.hls is not None:
                    room.hls.push_audio(frame)  # after feed: on the room's timeline
        except MediaStreamError:
            pass

    def _start_hls(self, room: _Room, *, audio: bool) -> None:
        """One encoder per room, for its lifetime; it has an audio stream when the first
        publisher sends audio (a playlist cannot add a stream later)."""
        if not self._settings.hls_enabled:
            return
        video = room.relay.subscribe(room.video, buffered=False)
        room.hls = HlsEncoder(video, self._hls_root / room.id, segment_s=self._settings.hls_segment_s,
                              playlist_size=self._settings.hls_playlist_size, audio=audio)
        room.hls.start()

    async def _drop_viewer(self, peer: _Peer) -> None:
        self._peers.pop(peer.id, None)
        room = self._rooms.get(peer.room_id)
        if room is not None:
            room.viewers.pop(peer.id, None)
        self._gauges()
        await peer.close()

    async def _drop_publisher(self, peer: _Peer, *, grace: bool) -> None:
        """The publisher left. After ICE failure (``grace``) the room waits for it to come
        back; after a DELETE the room's video ends now."""
        self._peers.pop(peer.id, None)
        room = self._rooms.get(peer.room_id)
        current = room is not None and room.publisher is peer
        if room is not None and current:
            room.publisher, room.frame, room.jpeg = None, None, None
            room.orphaned_at = time.monotonic()
        self._gauges()
        await peer.close()
        if room is not None and current and not grace and room.publisher is None:
            await self._teardown(room)

    async def _teardown(self, room: _Room) -> None:
        if self._rooms.get(room.id) is room:
            del self._rooms[room.id]
        peers = [p for p in (room.publisher, *room.viewers.values()) if p is not None]
        room.publisher, room.frame, room.jpeg = None, None, None
        room.viewers.clear()
        for p in peers:
            self._peers.pop(p.id, None)
        self._gauges()
        # Ending the sources ends the relay's readers: viewers' senders and the HLS encoder.
        room.video.end()
        room.audio.end()
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        if room.hls is not None:
            await room.hls.stop()
        log.info("room %s: media stopped", room.id)

    async def _sweep(self) -> None:
        now = time.monotonic()
        for peer in list(self._peers.values()):
            if not peer.connected and not peer.closing and now - peer.created > CONNECT_TIMEOUT_S:
                log.info("%s peer %s never connected; closing", peer.kind, peer.id[:8])
                self._spawn(self._lost(peer))
        for room in list(self._rooms.values()):
            if room.publisher is None and room.orphaned_at is not None and now - room.orphaned_at > REPUBLISH_GRACE_S:
                self._spawn(self._teardown(room))
            elif room.publisher is not None and self._rooms_svc is not None and now - room.checked_at > ROOM_CHECK_S:
                room.checked_at = now
                try:
                    status = (await self._rooms_svc.get(room.id)).status
                except NotFound:
                    status = "ended"
                if status != "live":
                    log.info("room %s is %s; stopping its media", room.id, status)
                    self._spawn(self.stop_room(room.id))


def _check_room_id(room_id: str) -> None:
    if not ROOM_ID_RE.match(room_id):
        raise Invalid("bad room id")


def _parse_offer(sdp: str, *, sending: bool) -> tuple[RTCSessionDescription, set[str]]:
    """Check an SDP offer before any peer connection exists; returns it and its media kinds.
    ``Invalid`` names what is wrong (aiortc checks the rest, e.g. ICE credentials)."""
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as e:
        raise Invalid(f"not a valid SDP offer: {e or type(e).__name__}") from e
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    if not any(m.kind == "video" for m in media):
        raise Invalid("the offer has no video")
    want = ("sendonly", "sendrecv") if sending else ("recvonly", "sendrecv")
    if not any(m.kind == "video" and (m.direction or "sendrecv") in want for m in media):
        raise Invalid("the offer's video must be " + (" or ".join(want)))
    return RTCSessionDescription(sdp=sdp, type="offer"), {m.kind for m in media}


def install(svc: Services) -> None:
    """Build the media service, stop it at shutdown and when a room ends."""
    media = MediaService(svc.settings, svc.metrics, svc.rooms)
    svc.media = media
    svc.add_loop("media", media.run, "serving")
    svc.closers.append(media.close)
    svc.rooms.on_end.append(media.stop_room)
    svc.rooms.hosting.append(media.publishing_rooms)
