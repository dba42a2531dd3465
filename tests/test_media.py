"""Live video: WHIP ingest, WHEP playback, snapshots and HLS, with real aiortc peers against
the real server (real Redis, real database)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from live.core.settings import Settings
from tests.media_support import (
    BLUE,
    RED,
    ColourCamera,
    SdpError,
    close_all,
    close_to,
    jpeg_colour,
    mean_colour,
    play,
    publish,
    sdp_post,
    wait_state,
    whip_offer,
)
from tests.support import (
    Api,
    RedisServer,
    RunningServer,
    TestDatabase,
    free_port,
    run_app,
    spawn_server,
    stop_server,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(60)


async def wait_until(cond: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return res
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.1)


async def test_whip_publish_and_whep_viewer_receives_frames(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"], ColourCamera(RED))
    viewer = None
    try:
        assert re.fullmatch(rf"/api/rooms/{room['id']}/whip/[0-9a-f]{{32}}", pub.location)
        assert "a=candidate" in pub.answer  # non-trickle: the answer carries its candidates
        await wait_state(pub.pc, ("connected",))
        with pytest.raises(SdpError) as e:
            await play(api, room["id"], token="not-a-token")  # optional, but checked when sent
        assert e.value.status == 401
        viewer = await play(api, room["id"])  # no token needed to watch
        assert re.fullmatch(rf"/api/rooms/{room['id']}/whep/[0-9a-f]{{32}}", viewer.location)
        await viewer.wait_colour(RED)
        first = viewer.frames
        await wait_until(lambda: viewer.frames >= first + 10, what="10 more frames")
        assert server.services.media.stats()["viewers"] == 1
        metrics = (await api.get("/metrics"))[1].decode()
        assert "live_media_publishers 1.0" in metrics and "live_media_whep_viewers 1.0" in metrics
    finally:
        await close_all(viewer, pub)


async def test_snapshot_shows_what_the_camera_shows(api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    status, body = await api.get(f"/api/rooms/{room['id']}/snapshot.jpg")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    pub = await publish(api, room["id"], s["token"], ColourCamera(RED))
    try:
        async def snap_is(colour: tuple[int, int, int]) -> bool:
            status, data = await api.get(f"/api/rooms/{room['id']}/snapshot.jpg")
            return status == 200 and close_to(jpeg_colour(data), colour, tol=30)

        await wait_until(lambda: snap_is(RED), what="a red snapshot")
        pub.camera.colour = BLUE
        await wait_until(lambda: snap_is(BLUE), what="a blue snapshot after the camera turned blue")
    finally:
        await close_all(pub)


async def test_hls_playlist_appears_and_segments_decode(api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"], ColourCamera(BLUE))
    try:
        async def segments() -> list[str]:
            status, body = await api.get(f"/live/{room['id']}/index.m3u8")
            return re.findall(r"^seg_\S+\.ts$", body.decode(), re.M) if status == 200 else []

        names = await wait_until(segments, timeout=15, what="an HLS segment in the playlist")
        status, playlist = await api.get(f"/live/{room['id']}/index.m3u8")
        text = playlist.decode()
        assert text.startswith("#EXTM3U") and "#EXT-X-TARGETDURATION:1" in text
        status, seg = await api.get(f"/live/{room['id']}/{names[0]}")
        assert status == 200
        with av.open(io.BytesIO(seg), mode="r", format="mpegts") as container:
            assert container.streams.video[0].codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) >= 10  # ~1 s of 30 fps, minus what a busy CPU dropped
        assert close_to(mean_colour(frames[-1]), BLUE)
        for bad in ("../../secret.key", "x.ts", "index.m3u8.tmp"):
            status, _ = await api.get(f"/live/{room['id']}/{bad}")
            assert status == 404
    finally:
        await close_all(pub)


async def test_only_the_rooms_streamer_publishes(api: Api) -> None:
    s = await api.streamer()
    other = await api.streamer()
    viewer = await api.guest()
    room = await api.live_room(s["token"])
    pc, offer = await whip_offer(ColourCamera())
    try:
        path = f"/api/rooms/{room['id']}/whip"
        for token, status, code in ((viewer["token"], 403, "FORBIDDEN"), (other["token"], 403, "FORBIDDEN"),
                                    (None, 401, "UNAUTHORIZED")):
            got, body, _ = await sdp_post(api, path, offer, token)
            assert (got, body["error"]["code"]) == (status, code)
        got, body, _ = await sdp_post(api, "/api/rooms/nope/whip", offer, s["token"])
        assert (got, body["error"]["code"]) == (404, "NOT_FOUND")
        for bad, ctype in (("v=0 garbage", "application/sdp"), ("", "application/sdp"),
                           (offer, "application/json"), (offer.replace("m=video", "m=text"), "application/sdp")):
            got, body, _ = await sdp_post(api, path, bad, s["token"], content_type=ctype)
            assert (got, body["error"]["code"]) == (400, "INVALID"), (bad[:30], ctype, body)
        scheduled = await api.ok("POST", "/api/rooms", json={"title": "later"}, token=s["token"])
        got, body, _ = await sdp_post(api, f"/api/rooms/{scheduled['id']}/whip", offer, s["token"])
        assert (got, body["error"]["code"]) == (409, "CONFLICT")
    finally:
        await pc.close()


async def test_ending_the_room_closes_the_peer_connections(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"])
    viewer = None
    try:
        viewer = await play(api, room["id"])
        await viewer.wait_colour(RED)
        media = server.services.media
        hls_dir = server.settings.data_dir / "hls" / room["id"]
        await wait_until(lambda: (hls_dir / "index.m3u8").exists(), timeout=15, what="the HLS playlist")
        await api.ok("POST", f"/api/rooms/{room['id']}/end", token=s["token"])
        # The server's side is gone at once; the clients see their connections close.
        assert media.stats() | {"hls_frames": {}} == {"rooms": 0, "publishers": 0, "viewers": 0, "peers": 0,
                                                       "tasks": 0, "hls_frames": {}}
        assert not hls_dir.exists()
        assert await wait_state(pub.pc, ("closed", "failed")) in ("closed", "failed")
        assert await wait_state(viewer.pc, ("closed", "failed")) in ("closed", "failed")
        await asyncio.wait_for(viewer.ended.wait(), 5)
        status, _ = await api.get(f"/api/rooms/{room['id']}/snapshot.jpg")
        assert status == 404
        metrics = (await api.get("/metrics"))[1].decode()
        assert "live_media_publishers 0.0" in metrics and "live_media_whep_viewers 0.0" in metrics
    finally:
        await close_all(viewer, pub)


async def test_viewer_cap_answers_unavailable_with_hls(settings_factory: Callable[..., Settings]) -> None:
    async with run_app(settings_factory(whep_max_viewers=1)) as srv, Api(srv.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        pub = await publish(api, room["id"], s["token"])
        first = second = third = None
        try:
            first = await play(api, room["id"])
            with pytest.raises(SdpError) as e:
                second = await play(api, room["id"])
            assert e.value.status == 503 and e.value.code == "UNAVAILABLE"
            assert e.value.body["error"]["hls"] == f"/live/{room['id']}/index.m3u8"
            status, _ = await api.delete(first.location)
            assert status == 200
            third = await play(api, room["id"])  # the slot is free again
            await third.wait_colour(RED)
        finally:
            await close_all(first, second, third, pub)


async def test_delete_of_the_whip_session_ends_it(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    other = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"])
    viewer = None
    try:
        viewer = await play(api, room["id"])
        await viewer.wait_colour(RED)
        status, body = await api.delete(pub.location, token=other["token"])
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"
        status, body = await api.request("PATCH", pub.location, token=s["token"])
        assert status == 405  # no trickle ICE: the answer already carried every candidate
        status, _ = await api.delete(pub.location, token=s["token"])
        assert status == 200
        assert await wait_state(pub.pc, ("closed", "failed")) in ("closed", "failed")
        await asyncio.wait_for(viewer.ended.wait(), 5)
        assert server.services.media.stats()["peers"] == 0
        status, body = await api.delete(pub.location, token=s["token"])
        assert status == 404 and body["error"]["code"] == "NOT_FOUND"
        status, _ = await api.get(f"/api/rooms/{room['id']}/snapshot.jpg")
        assert status == 404
        with pytest.raises(SdpError) as e:
            await play(api, room["id"])
        assert e.value.code == "NOT_FOUND"
    finally:
        await close_all(viewer, pub)


async def test_a_new_publish_replaces_the_old_and_viewers_carry_on(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    first = await publish(api, room["id"], s["token"], ColourCamera(RED))
    second = viewer = None
    try:
        viewer = await play(api, room["id"])
        await viewer.wait_colour(RED)
        second = await publish(api, room["id"], s["token"], ColourCamera(BLUE))
        assert await wait_state(first.pc, ("closed", "failed")) in ("closed", "failed")
        await viewer.wait_colour(BLUE)  # same WHEP session, new picture
        assert not viewer.ended.is_set()
        assert server.services.media.stats()["publishers"] == 1
    finally:
        await close_all(viewer, first, second)


async def test_shutdown_closes_everything_and_leaves_no_task(settings_factory: Callable[..., Settings]) -> None:
    before = asyncio.all_tasks()
    async with run_app(settings_factory()) as srv, Api(srv.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        pub = await publish(api, room["id"], s["token"])
        viewer = await play(api, room["id"])
        await viewer.wait_colour(RED)
        hls_dir = srv.settings.data_dir / "hls" / room["id"]
        await wait_until(lambda: (hls_dir / "index.m3u8").exists(), timeout=15, what="the HLS playlist")
    assert not hls_dir.exists()
    assert await wait_state(pub.pc, ("closed", "failed")) in ("closed", "failed")
    await close_all(viewer, pub)
    await asyncio.sleep(0.2)
    left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not left, [repr(t.get_coro()) for t in left]


async def test_a_card_is_created_from_the_snapshot(api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"], ColourCamera(BLUE))
    try:
        async def snapshot_ready() -> bool:
            status, _ = await api.get(f"/api/rooms/{room['id']}/snapshot.jpg")
            return status == 200

        await wait_until(snapshot_ready, what="a snapshot")
        card = await api.ok("POST", f"/api/rooms/{room['id']}/cards", token=s["token"],
                            json={"price": "19.90", "stock": 3, "snapshot": True, "title": "live pick"})
        status, image = await api.get(card["image_url"])
        assert status == 200 and close_to(jpeg_colour(image), BLUE, tol=30)
    finally:
        await close_all(pub)


async def test_publisher_lost_to_the_network_can_come_back(api: Api, server: RunningServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import live.media.rtc

    monkeypatch.setattr(live.media.rtc, "REPUBLISH_GRACE_S", 1.5)
    s = await api.streamer()
    room = await api.live_room(s["token"])
    first = await publish(api, room["id"], s["token"], ColourCamera(RED))
    second = viewer = None
    try:
        viewer = await play(api, room["id"])
        await viewer.wait_colour(RED)
        await first.pc.close()  # the phone drops off without a DELETE
        media = server.services.media
        await wait_until(lambda: media.stats()["publishers"] == 0, what="the lost publisher noticed")
        assert media.stats()["viewers"] == 1  # the audience waits for the streamer
        second = await publish(api, room["id"], s["token"], ColourCamera(BLUE))
        await viewer.wait_colour(BLUE)
        await second.pc.close()
        # Nobody comes back this time: after the grace the room's video ends for its viewers.
        await asyncio.wait_for(viewer.ended.wait(), 10)
        idle = {"rooms": 0, "publishers": 0, "viewers": 0, "peers": 0, "tasks": 0, "hls_frames": {}}
        await wait_until(lambda: media.stats() == idle, timeout=5, what="the room's media torn down")
    finally:
        await close_all(viewer, first, second)


async def test_a_viewer_that_never_connects_is_dropped(api: Api, server: RunningServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import live.media.rtc

    monkeypatch.setattr(live.media.rtc, "CONNECT_TIMEOUT_S", 1.0)
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"])
    from tests.media_support import new_pc

    ghost = new_pc()
    try:
        ghost.addTransceiver("video", direction="recvonly")
        await ghost.setLocalDescription(await ghost.createOffer())
        # The offer is sent but the answer never applied: ICE never completes on the server.
        sdp = ghost.localDescription.sdp.replace("a=candidate", "a=x-no-candidate")
        status, _, _ = await sdp_post(api, f"/api/rooms/{room['id']}/whep", sdp)
        assert status == 201
        media = server.services.media
        assert media.stats()["viewers"] == 1
        await wait_until(lambda: media.stats()["viewers"] == 0, timeout=8, what="the ghost viewer dropped")
        assert media.stats()["publishers"] == 1  # the connected publisher stays
    finally:
        await close_all(ghost, pub)


async def test_live_source_timeline_only_moves_forwards() -> None:
    """Publisher swaps and RTP restarts never send viewers' or HLS timestamps backwards."""
    import fractions

    from av.video.frame import VideoFrame

    from live.media.rtc import LiveSource

    source = LiveSource("video")
    tb = fractions.Fraction(1, 90000)
    out: list[int] = []

    def feed(pts: int, epoch: object) -> None:
        frame = VideoFrame(width=16, height=16)
        frame.pts, frame.time_base = pts, tb
        source.feed(frame, epoch)
        out.append(fed().pts or 0)

    def fed() -> VideoFrame:
        frame = source._frame
        assert isinstance(frame, VideoFrame)
        return frame

    a, b = object(), object()
    for pts in (1000, 4000, 7000):
        feed(pts, a)
    await asyncio.sleep(0.05)  # the new publisher starts 50 ms later, its RTP clock at 0
    for pts in (0, 3000):
        feed(pts, b)
    feed(10**9, b)  # a jump of hours inside one stream is a restart, not a gap to replay
    assert out[:3] == [0, 3000, 6000]
    assert 6000 + 4000 <= out[3] <= 6000 + 90000  # about 50 ms of wall time later
    assert out[4] == out[3] + 3000
    assert out[4] < out[5] < out[4] + 90000
    frame = await asyncio.wait_for(source.recv(), 1)  # the newest frame only
    assert frame.pts == out[5]
    source.end()
    with pytest.raises(MediaStreamError):
        await source.recv()


async def test_audio_reaches_whep_viewers_and_hls(api: Api) -> None:
    from aiortc import AudioStreamTrack, RTCSessionDescription

    from tests.media_support import new_pc

    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub_pc, view_pc = new_pc(), new_pc()
    pub_pc.addTransceiver(ColourCamera(), direction="sendonly")
    pub_pc.addTransceiver(AudioStreamTrack(), direction="sendonly")  # what a browser sends
    audio_frames = 0
    consumers: list[asyncio.Task[None]] = []

    async def count(track: Any) -> None:
        nonlocal audio_frames
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                audio_frames += 1

    @view_pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "audio":
            consumers.append(asyncio.create_task(count(track)))

    try:
        await pub_pc.setLocalDescription(await pub_pc.createOffer())
        status, answer, _ = await sdp_post(api, f"/api/rooms/{room['id']}/whip", pub_pc.localDescription.sdp,
                                           s["token"])
        assert status == 201 and "m=audio" in answer
        await pub_pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        view_pc.addTransceiver("video", direction="recvonly")
        view_pc.addTransceiver("audio", direction="recvonly")
        await view_pc.setLocalDescription(await view_pc.createOffer())
        status, answer, _ = await sdp_post(api, f"/api/rooms/{room['id']}/whep", view_pc.localDescription.sdp)
        assert status == 201
        await view_pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_until(lambda: audio_frames >= 25, what="half a second of audio at the viewer")

        async def segments() -> list[str]:
            status, body = await api.get(f"/live/{room['id']}/index.m3u8")
            return re.findall(r"^seg_\S+\.ts$", body.decode(), re.M) if status == 200 else []

        names = await wait_until(segments, timeout=15, what="an HLS segment")
        status, seg = await api.get(f"/live/{room['id']}/{names[-1]}")
        with av.open(io.BytesIO(seg), mode="r", format="mpegts") as container:
            assert container.streams.audio[0].codec_context.name == "aac"
            sound = list(container.decode(audio=0))
        with av.open(io.BytesIO(seg), mode="r", format="mpegts") as container:
            picture = list(container.decode(video=0))
        # Audio and video of a segment cover the same stretch of time (within half a second).
        assert abs(float(sound[0].time or 0) - float(picture[0].time or 0)) < 0.5, (sound[0].time, picture[0].time)
        # ~1 s of 48 kHz AAC is ~47 frames of 1024 samples; a busy CPU may cut the segment short.
        assert sum(f.samples for f in sound) >= 0.5 * 48000
    finally:
        await close_all(view_pc, pub_pc)
        for t in consumers:
            t.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)


async def test_a_room_ended_through_another_process_stops_its_media(api: Api, server: RunningServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import live.media.rtc
    from live.core.models import Room

    monkeypatch.setattr(live.media.rtc, "ROOM_CHECK_S", 0.5)
    s = await api.streamer()
    room = await api.live_room(s["token"])
    pub = await publish(api, room["id"], s["token"])
    try:
        await wait_state(pub.pc, ("connected",))
        # Another process ended it: the database says so, but no on_end hook ran here.
        async with server.services.db() as db, db.begin():
            (await db.get(Room, room["id"])).status = "ended"
        assert await wait_state(pub.pc, ("closed", "failed"), timeout=8) in ("closed", "failed")
        assert server.services.media.stats()["publishers"] == 0
    finally:
        await close_all(pub)


@pytest.mark.slow
async def test_the_shipped_server_on_uvloop_carries_webrtc(redis_server: RedisServer, database: TestDatabase) -> None:
    """run_server.py runs on uvloop by default; aiortc's UDP transports must work on it."""
    port = free_port()
    proc = spawn_server(port, {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
                               "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-uvloop-")})
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, 60)
        async with Api(url) as api:
            assert (await api.ok("GET", "/healthz")).get("event_loop") == "uvloop"
            s = await api.streamer()
            room = await api.live_room(s["token"])
            pub = await publish(api, room["id"], s["token"], ColourCamera(BLUE))
            viewer = None
            try:
                await wait_state(pub.pc, ("connected",))
                viewer = await play(api, room["id"])
                await viewer.wait_colour(BLUE)
            finally:
                await close_all(viewer, pub)
    finally:
        stop_server(proc)
