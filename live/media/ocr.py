"""Text in images: read what a product photo or a live-video frame says, so the guard can vet it.

A phone number or a WeChat id drawn into a photo is as much private trading as one typed in
chat. ``TextReader`` runs rapidocr (PaddleOCR's Chinese detection and recognition models as
ONNX, shipped inside the ``rapidocr-onnxruntime`` wheel: no download, no network at run time)
on one dedicated worker thread with one ONNX thread, so OCR never takes more than one core and
never runs on the event loop or the buy path. ``FrameSampler`` reads a frame of each live room
at a settable interval within a CPU budget. See ``docs/guard.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_SCORE = 0.5  # recognised lines below this confidence are noise (textures, fabric patterns)


@dataclass(frozen=True)
class ReadText:
    """The lines of text found in an image, top to bottom, and the CPU seconds it took."""

    lines: list[str]
    cpu_s: float

    @property
    def text(self) -> str:
        # Lines are separate clauses: the guard never glues padding across them.
        return "，".join(self.lines)


class TextReader:
    """OCR on one worker thread; the models load on first use (≈0.3 s)."""

    def __init__(self, *, max_side_px: int = 1280) -> None:
        self._max_side = max_side_px
        self._engine: Any = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")

    def read_sync(self, image: bytes) -> ReadText:
        """The text in ``image`` (JPEG/PNG/WebP bytes). CPU-bound: call through ``read``."""
        start = time.thread_time()
        with Image.open(io.BytesIO(image)) as img:
            img.draft("RGB", (self._max_side, self._max_side))  # JPEG: decode at reduced scale
            rgb = img.convert("RGB")
        rgb.thumbnail((self._max_side, self._max_side))
        # rapidocr takes OpenCV's BGR channel order.
        result, _ = self._get_engine()(np.asarray(rgb)[:, :, ::-1])
        lines = [str(text) for _, text, score in (result or []) if float(score) >= MIN_SCORE and str(text).strip()]
        return ReadText(lines, time.thread_time() - start)

    async def read(self, image: bytes) -> ReadText:
        """``read_sync`` on the OCR thread: the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read_sync, image)

    def _get_engine(self) -> Any:
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR  # heavy import: only when OCR is used

                # One ONNX thread: the box has few cores and chat, buys and video share them.
                self._engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
            return self._engine

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class FrameSampler:
    """Reads the text in a frame of every live room published here, every ``interval_s``,
    spending at most ``cpu_budget`` of one core on it (it waits longer when OCR was slow)."""

    def __init__(self, reader: TextReader, *, interval_s: float, cpu_budget: float,
                 rooms: Callable[[], Awaitable[list[str]]], frame: Callable[[str], bytes | None],
                 on_text: Callable[[str, str], Awaitable[None]]) -> None:
        self._reader = reader
        self._interval = interval_s
        self._budget = cpu_budget
        self._rooms = rooms
        self._frame = frame
        self._on_text = on_text
        self.frames_read = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set."""
        while not stop.is_set():
            busy = 0.0
            try:
                busy = await self.sample_once()
            except Exception:  # one bad frame or room must not end the loop
                log.exception("reading text in live video failed")
            # busy / (busy + wait) <= budget, and never more often than the interval.
            wait = max(self._interval, busy / self._budget - busy)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def sample_once(self) -> float:
        """Read one frame of each room; the CPU seconds spent."""
        busy = 0.0
        for room_id in await self._rooms():
            image = await asyncio.to_thread(self._frame, room_id)
            if image is None:
                continue  # no video of this room on this process
            found = await self._reader.read(image)
            busy += found.cpu_s
            self.frames_read += 1
            if found.lines:
                await self._on_text(room_id, found.text)
        return busy
