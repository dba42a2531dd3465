"""HTTP routes of live video: WHIP ingest, WHEP playback (RFC 9725 style, non-trickle),
the snapshot JPEG and the HLS playlist and segments. Parse, authorise, call ``svc.media``,
reply; the media rules live in ``live.media.rtc``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from live.core.errors import Conflict, Forbidden, Invalid, NotFound
from live.transport.http import api, bearer, principal, services

routes = web.RouteTableDef()

SDP = "application/sdp"
MAX_SDP_BYTES = 64 * 1024  # a browser offer is a few KiB; anything far larger is not one


async def _offer(request: web.Request) -> str:
    """The SDP offer of a WHIP/WHEP POST, or ``Invalid``."""
    if request.content_type != SDP:
        raise Invalid(f"Content-Type must be {SDP}")
    if (request.content_length or 0) > MAX_SDP_BYTES:
        raise Invalid("SDP offer too large")
    raw = await request.content.read(MAX_SDP_BYTES + 1)
    if len(raw) > MAX_SDP_BYTES:
        raise Invalid("SDP offer too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid("SDP offer is not UTF-8") from e
    if not text.strip():
        raise Invalid("empty SDP offer")
    return text


def _answer(request: web.Request, sdp: str, location: str) -> web.Response:
    """201 with the SDP answer, the session's ``Location`` and the ICE servers (RFC 9725 §4.6)."""
    resp = web.Response(status=201, text=sdp, content_type=SDP)
    resp.headers["Location"] = location
    resp.headers["Cache-Control"] = "no-store"
    for url in services(request).settings.ice_servers:
        resp.headers.add("Link", f'<{url}>; rel="ice-server"')
    return resp


async def _live_room(request: web.Request) -> str:
    room_id = request.match_info["room_id"]
    room = await services(request).rooms.get(room_id)
    if room.status != "live":
        raise Conflict("the room is not live")
    return room_id


@routes.post("/api/rooms/{room_id}/whip")
async def whip_publish(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    room_id = request.match_info["room_id"]
    room = await svc.rooms.get(room_id)
    if room.streamer_id != who.id:
        raise Forbidden("only the room's streamer publishes its video")
    if room.status != "live":
        raise Conflict("the room is not live")
    session, answer = await svc.media.publish(room_id, await _offer(request))
    return _answer(request, answer, f"/api/rooms/{room_id}/whip/{session}")


@routes.delete("/api/rooms/{room_id}/whip/{session}")
async def whip_end(request: web.Request) -> web.Response:
    svc = services(request)
    who = principal(request)
    room_id = request.match_info["room_id"]
    await svc.rooms.require_owner(who, room_id)  # its streamer, or a moderator cutting the stream
    await svc.media.unpublish(room_id, request.match_info["session"])
    return web.Response(status=200)


@routes.post("/api/rooms/{room_id}/whep")
async def whep_play(request: web.Request) -> web.Response:
    svc = services(request)
    if bearer(request) is not None:
        principal(request)  # optional, but a token that is sent must be valid
    room_id = await _live_room(request)
    session, answer = await svc.media.play(room_id, await _offer(request))
    return _answer(request, answer, f"/api/rooms/{room_id}/whep/{session}")


@routes.delete("/api/rooms/{room_id}/whep/{session}")
async def whep_end(request: web.Request) -> web.Response:
    # The unguessable session id in the Location is the credential, as in WHEP.
    await services(request).media.stop_play(request.match_info["room_id"], request.match_info["session"])
    return web.Response(status=200)


@routes.get("/api/rooms/{room_id}/snapshot.jpg")
@api(summary="The latest video frame of a live room", tag="media", auth="none", media="image/jpeg")
async def snapshot(request: web.Request) -> web.Response:
    media = services(request).media
    jpeg = await asyncio.to_thread(media.latest_jpeg, request.match_info["room_id"])
    if jpeg is None:
        raise NotFound("no live video in this room on this server")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@routes.get("/live/{room_id}/{name}")
async def hls(request: web.Request) -> web.Response:
    path = services(request).media.hls_path(request.match_info["room_id"], request.match_info["name"])
    if path is None:
        raise NotFound("no such HLS file")
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise NotFound("no such HLS file (is the room live here?)") from None
    if path.suffix == ".m3u8":
        # The live playlist changes every segment; segments never change once listed.
        return web.Response(body=data, content_type="application/vnd.apple.mpegurl",
                            headers={"Cache-Control": "no-cache"})
    return web.Response(body=data, content_type="video/mp2t", headers={"Cache-Control": "max-age=60"})


def setup(app: web.Application, socket_app: object) -> None:
    """Add the media routes (called by ``live.app.factory.create_app``)."""
    app.router.add_routes(routes)
