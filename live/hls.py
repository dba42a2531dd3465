"""HLS for large audiences: the ingested video encoded ONCE (PyAV, H.264) into a rolling
live playlist, so any number of viewers (or a CDN in front) cost one encode.

``HlsEncoder`` reads decoded frames from a ``MediaStreamTrack`` (a ``MediaRelay`` proxy of the
room's video) and feeds FFmpeg's ``hls`` muxer, which writes ``index.m3u8`` and ``seg_*.ts``
under one directory per room. The muxer writes the playlist through a temporary file and a
rename, so a reader never sees a half-written playlist, and a segment is listed only once it
is complete. Encoding is CPU-bound and runs in a worker thread, one frame at a time; frames
that arrive while the encoder is busy are dropped by the unbuffered relay proxy (latest wins),
which keeps memory bounded and the stream live under CPU pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import PictureType, VideoFrame

log = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
# Names the encoder writes (and the only names ``HlsEncoder.file`` will hand out).
SEGMENT_RE = re.compile(r"^seg_[0-9a-f]{8}_[0-9]{5,}\.ts$")
TIME_BASE = fractions.Fraction(1, 90000)


class _Writer:
    """The PyAV side of the encoder. Every method runs in a worker thread, never two at once."""

    def __init__(self, out_dir: Path, segment_s: float, playlist_size: int) -> None:
        self._dir = out_dir
        self._segment_s = segment_s
        self._playlist_size = playlist_size
        self._out: Any = None
        self._stream: Any = None
        self._size = (0, 0)
        self._origin: int | None = None
        self._last_pts = -1
        self._next_key = 0
        self.frames = 0

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
        stream = self._out.add_stream("libx264", rate=30, options={
            "preset": "ultrafast", "tune": "zerolatency",
            # Keyframes are forced by time (one per segment), not by frame count: WebRTC frame
            # rates vary. forced-idr makes them IDR frames, so every segment starts decodable.
            "x264-params": "scenecut=0:forced-idr=1:keyint=600:min-keyint=1",
        })
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        stream.time_base = TIME_BASE
        self._stream = stream
        self._size = (width, height)

    def encode(self, frame: VideoFrame) -> None:
        """Encode one frame (pts in any time base; timestamps only move forwards)."""
        if self._out is None:
            self._open(frame.width, frame.height)
        if frame.pts is None or frame.time_base is None:
            return
        pts = int(frame.pts * frame.time_base / TIME_BASE)
        if self._origin is None:
            self._origin = pts
        pts -= self._origin
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
        for packet in self._stream.encode(out):
            self._out.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and write the final playlist (with ``#EXT-X-ENDLIST``)."""
        if self._out is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._out.mux(packet)
        finally:
            self._out.close()
            self._out = None


class HlsEncoder:
    """Encodes one room's video into a live HLS playlist under ``out_dir``."""

    def __init__(self, track: MediaStreamTrack, out_dir: Path, *, segment_s: float, playlist_size: int) -> None:
        self.dir = out_dir
        self._track = track
        self._writer = _Writer(out_dir, segment_s, playlist_size)
        self._task: asyncio.Task[None] | None = None

    @property
    def frames(self) -> int:
        """Frames encoded so far."""
        return self._writer.frames

    def start(self) -> None:
        """Start encoding (first clearing what a previous encoder left in ``out_dir``)."""
        self._task = asyncio.create_task(self._run(), name=f"hls:{self.dir.name}")

    async def stop(self) -> None:
        """Stop encoding and finish the playlist; returns once every file is closed."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._track.stop()

    async def _run(self) -> None:
        inflight: asyncio.Future[None] | None = None
        try:
            await asyncio.to_thread(remove_dir, self.dir)
            while True:
                frame = await self._track.recv()
                if not isinstance(frame, VideoFrame):
                    continue
                inflight = asyncio.ensure_future(asyncio.to_thread(self._writer.encode, frame))
                # Shielded: a cancel must not abandon the thread mid-frame while the muxer is
                # then closed under it; the finally block waits for it instead.
                await asyncio.shield(inflight)
                inflight = None
        except MediaStreamError:
            pass
        except Exception:
            log.exception("HLS encoder of %s failed; HLS stops for this stream", self.dir.name)
        finally:
            if inflight is not None:
                await asyncio.gather(inflight, return_exceptions=True)
            try:
                await asyncio.to_thread(self._writer.close)
            except Exception:
                log.exception("closing the HLS encoder of %s failed", self.dir.name)


def hls_file(root: Path, room_id: str, name: str) -> Path | None:
    """The path of a playlist or segment that a client may fetch, or None for any other name."""
    if name != PLAYLIST and not SEGMENT_RE.match(name):
        return None
    return root / room_id / name


def remove_dir(path: Path) -> None:
    """Remove an encoder's directory (blocking; call in a thread)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
