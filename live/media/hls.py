"""HLS for large audiences: the ingested video encoded ONCE (PyAV, H.264; audio as AAC) into
a rolling live playlist, so any number of viewers (or a CDN in front) cost one encode.

``HlsEncoder`` reads decoded video frames from a ``MediaStreamTrack`` (a ``MediaRelay`` proxy
of the room's video), takes audio frames pushed to it, and feeds FFmpeg's ``hls`` muxer, which
writes ``index.m3u8`` and ``seg_*.ts`` under one directory per room. The muxer writes the
playlist through a temporary file and a rename, so a reader never sees a half-written
playlist, and a segment is listed only once it is complete. Encoding is CPU-bound and runs in
worker threads, one frame at a time; video frames that arrive while the encoder is busy are
dropped by the unbuffered relay proxy (latest wins), audio waits in a small bounded queue.
Memory stays bounded and the stream stays live under CPU pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.video.frame import PictureType, VideoFrame

log = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
# Names the encoder writes (and the only names ``HlsEncoder.file`` will hand out).
SEGMENT_RE = re.compile(r"^seg_[0-9a-f]{8}_[0-9]{5,}\.ts$")
TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_QUEUE = 100  # 2 s of 20 ms WebRTC audio frames


class _Writer:
    """The PyAV side of the encoder. Its methods run in worker threads, serialised by a lock."""

    def __init__(self, out_dir: Path, segment_s: float, playlist_size: int, audio: bool) -> None:
        self._dir = out_dir
        self._segment_s = segment_s
        self._playlist_size = playlist_size
        self._audio = audio
        self._lock = threading.Lock()
        self._out: Any = None
        self._video: Any = None
        self._sound: Any = None
        self._resampler: Any = None
        self._size = (0, 0)
        self._origin: fractions.Fraction | None = None  # the first video frame's time (s)
        self._last_pts = -1
        self._last_audio_pts = -1
        self._next_key = 0
        self.frames = 0
        self.audio_frames = 0

    def _open(self, width: int, height: int) -> None:
        # H.264 4:2:0 wants even dimensions.
        width, height = max(2, width - width % 2), max(2, height - height % 2)
        self._dir.mkdir(parents=True, exist_ok=True)
        # A fresh token per encoder: a restarted stream never reuses a segment name that a
        # player or a CDN may have cached.
        token = secrets.token_hex(4)
        self._out = av.open(str(self._dir / PLAYLIST), mode="w", format="hls", options={
            "hls_time": f"{self._segment_s:g}",
            "hls_list_size": str(self._playlist_size),
            "hls_flags": "delete_segments+temp_file+independent_segments+program_date_time",
            "hls_segment_filename": str(self._dir / f"seg_{token}_%05d.ts"),
        })
        video = self._out.add_stream("libx264", rate=30, options={
            "preset": "ultrafast", "tune": "zerolatency",
            # Keyframes are forced by time (one per segment), not by frame count: WebRTC frame
            # rates vary. forced-idr makes them IDR frames, so every segment starts decodable.
            "x264-params": "scenecut=0:forced-idr=1:keyint=600:min-keyint=1",
        })
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = TIME_BASE
        video.time_base = TIME_BASE
        self._video = video
        self._size = (width, height)
        if self._audio:
            sound = self._out.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "stereo"
            sound.bit_rate = 96_000
            self._sound = sound
            # AAC takes fixed 1024-sample planar frames; WebRTC gives 20 ms packed ones.
            self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE, frame_size=1024)

    def encode(self, frame: VideoFrame) -> None:
        """Encode one video frame (pts in any time base; timestamps only move forwards)."""
        with self._lock:
            if self._out is None:
                self._open(frame.width, frame.height)
            if frame.pts is None or frame.time_base is None:
                return
            t = frame.pts * fractions.Fraction(frame.time_base.numerator, frame.time_base.denominator)
            if self._origin is None:
                self._origin = t
            pts = int((t - self._origin) / TIME_BASE)
            if pts <= self._last_pts:
                return
            self._last_pts = pts
            width, height = self._size
            # Relay frames are shared with the WebRTC viewers' encoders: never mutate them. A
            # reformat that changes nothing returns the same frame, so copy in that case.
            out = frame.reformat(width=width, height=height, format="yuv420p")
            if out is frame:
                out = VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
            out.pts = pts
            out.time_base = TIME_BASE
            if pts >= self._next_key:
                out.pict_type = PictureType.I
                self._next_key = pts + round(self._segment_s * 90000)
            else:
                out.pict_type = PictureType.NONE
            for packet in self._video.encode(out):
                self._out.mux(packet)
            self.frames += 1

    def encode_audio(self, frame: AudioFrame) -> None:
        """Encode one audio frame, on the video's timeline (dropped until video has started)."""
        with self._lock:
            if self._sound is None or self._origin is None or frame.pts is None or frame.time_base is None:
                return
            t = frame.pts * fractions.Fraction(frame.time_base.numerator, frame.time_base.denominator)
            if t < self._origin:
                return
            src = AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name)
            src.sample_rate = frame.sample_rate
            src.time_base = fractions.Fraction(1, frame.sample_rate)
            src.pts = int((t - self._origin) * frame.sample_rate)
            for out in self._resampler.resample(src):
                if out.pts is not None:
                    if out.pts <= self._last_audio_pts:
                        continue
                    self._last_audio_pts = out.pts
                for packet in self._sound.encode(out):
                    self._out.mux(packet)
                self.audio_frames += 1

    def close(self) -> None:
        """Flush the encoders and write the final playlist (with ``#EXT-X-ENDLIST``)."""
        with self._lock:
            if self._out is None:
                return
            try:
                for stream in (self._video, self._sound):
                    if stream is not None:
                        for packet in stream.encode(None):
                            self._out.mux(packet)
            finally:
                self._out.close()
                self._out = None


class HlsEncoder:
    """Encodes one room's video (and audio, when given) into a live HLS playlist under ``out_dir``."""

    def __init__(self, video: MediaStreamTrack, out_dir: Path, *, segment_s: float, playlist_size: int,
                 audio: bool = False) -> None:
        self.dir = out_dir
        self._video = video
        self._writer = _Writer(out_dir, segment_s, playlist_size, audio)
        # Audio is pushed (``push_audio``) rather than read from an unbuffered relay proxy:
        # skipped audio frames are audible gaps. Bounded: a stalled encoder drops the oldest.
        self._audio: asyncio.Queue[AudioFrame] | None = asyncio.Queue(AUDIO_QUEUE) if audio else None
        self._tasks: list[asyncio.Task[None]] = []

    def push_audio(self, frame: AudioFrame) -> None:
        """Queue an audio frame (its pts on the same timeline as the video's) for encoding."""
        if self._audio is None:
            return
        if self._audio.full():
            self._audio.get_nowait()
        self._audio.put_nowait(frame)

    @property
    def frames(self) -> int:
        """Video frames encoded so far."""
        return self._writer.frames

    @property
    def audio_frames(self) -> int:
        """AAC frames encoded so far."""
        return self._writer.audio_frames

    def start(self) -> None:
        """Start encoding (first clearing what a previous encoder left in ``out_dir``)."""
        self._tasks = [asyncio.create_task(self._run(), name=f"hls:{self.dir.name}")]

    async def stop(self) -> None:
        """Stop encoding and finish the playlist; returns once every file is closed."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._video.stop()

    async def _run(self) -> None:
        feeders: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(remove_dir, self.dir)
            feeders.append(asyncio.create_task(self._feed(self._next_video, self._writer.encode),
                                               name=f"hls-video:{self.dir.name}"))
            if self._audio is not None:
                feeders.append(asyncio.create_task(self._feed(self._audio.get, self._writer.encode_audio),
                                                   name=f"hls-audio:{self.dir.name}"))
            # The video feeder ends the stream; audio alone never keeps a playlist going.
            await feeders[0]
        except Exception:
            log.exception("HLS encoder of %s failed; HLS stops for this stream", self.dir.name)
        finally:
            for t in feeders:
                t.cancel()
            for res in await asyncio.gather(*feeders, return_exceptions=True):
                if isinstance(res, Exception):
                    log.error("HLS %s feeder failed: %r", self.dir.name, res)
            try:
                await asyncio.to_thread(self._writer.close)
            except Exception:
                log.exception("closing the HLS encoder of %s failed", self.dir.name)

    async def _next_video(self) -> Any:
        while True:
            frame = await self._video.recv()
            if isinstance(frame, VideoFrame):
                return frame

    @staticmethod
    async def _feed(source: Callable[[], Awaitable[Any]], encode: Callable[[Any], None]) -> None:
        inflight: asyncio.Future[None] | None = None
        try:
            while True:
                frame = await source()
                inflight = asyncio.ensure_future(asyncio.to_thread(encode, frame))
                # Shielded: a cancel must not abandon the thread mid-frame while the muxer is
                # then closed under it; the finally block waits for it instead.
                await asyncio.shield(inflight)
                inflight = None
        except MediaStreamError:
            pass
        finally:
            if inflight is not None:
                await asyncio.gather(inflight, return_exceptions=True)


def hls_file(root: Path, room_id: str, name: str) -> Path | None:
    """The path of a playlist or segment that a client may fetch, or None for any other name."""
    if name != PLAYLIST and not SEGMENT_RE.match(name):
        return None
    return root / room_id / name


def remove_dir(path: Path) -> None:
    """Remove an encoder's directory (blocking; call in a thread)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
