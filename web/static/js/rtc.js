// Live video: publish with WHIP (RFC 9725), play with WHEP, fall back to HLS.
// Offers are sent once ICE gathering is done (no trickle), which suits a same-host server.

import { ApiError, request } from "./net.js";

function gathered(pc, timeoutMs = 2500) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // host candidates are enough; do not wait for slow STUN
  });
}

async function exchange(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const r = await request("POST", url, {
    body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp" },
    token,
  });
  await pc.setRemoteDescription({ type: "answer", sdp: String(r.data) });
  const loc = r.headers.get("Location");
  return loc ? new URL(loc, new URL(url, location.href)).href : null;
}

/** A session to end: closes the peer connection and DELETEs its resource. */
class Session {
  constructor(pc, resource, token) {
    this.pc = pc;
    this.resource = resource;
    this.token = token;
  }

  async stop() {
    this.pc.close();
    if (this.resource) {
      await request("DELETE", this.resource, { token: this.token, timeoutMs: 3000 }).catch(() => {});
      this.resource = null;
    }
  }

  /** Best effort on page unload, when awaiting is not possible. */
  stopOnUnload() {
    if (!this.resource) return;
    fetch(this.resource, { method: "DELETE", keepalive: true, headers: { Authorization: `Bearer ${this.token}` } });
    this.resource = null;
  }
}

/** Publish `stream` to the room (its streamer's token) → Session. */
export async function publish(roomId, stream, token) {
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  try {
    const resource = await exchange(pc, `/api/rooms/${encodeURIComponent(roomId)}/whip`, token);
    return new Session(pc, resource, token);
  } catch (e) {
    pc.close();
    throw e;
  }
}

/**
 * Play the room in `video`: WHEP first, HLS when WHEP is refused or never delivers a frame.
 * `onState(kind)` is told "webrtc", "hls" or "none". Returns a stop function.
 */
export async function play(roomId, video, token, onState = () => {}) {
  let session = null;
  let hls = null;
  let stopped = false;
  const stop = () => {
    stopped = true;
    session?.stop();
    hls?.destroy();
  };
  window.addEventListener("pagehide", () => session?.stopOnUnload(), { once: true });

  try {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.addEventListener("track", (ev) => {
      stream.addTrack(ev.track);
      if (video.srcObject !== stream) video.srcObject = stream;
    });
    const resource = await exchange(pc, `/api/rooms/${encodeURIComponent(roomId)}/whep`, token);
    session = new Session(pc, resource, token);
    const playing = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 8000);
      video.addEventListener("loadeddata", () => { clearTimeout(timer); resolve(true); }, { once: true });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") { clearTimeout(timer); resolve(false); }
      });
    });
    if (playing && !stopped) {
      onState("webrtc");
      video.play().catch(() => {});
      return stop;
    }
    await session.stop();
    session = null;
  } catch (e) {
    if (!(e instanceof ApiError) && !(e instanceof DOMException)) console.warn("WHEP failed", e);
  }
  if (stopped) return stop;

  // HLS: hls.js where Media Source Extensions exist (most browsers, iOS 17.1+ through
  // ManagedMediaSource); the browser's own player otherwise (older iOS Safari).
  const src = `/live/${encodeURIComponent(roomId)}/index.m3u8`;
  video.srcObject = null;
  try {
    const head = await fetch(src, { method: "GET", cache: "no-store" });
    if (!head.ok) throw new Error(`HLS ${head.status}`);
    const { default: Hls } = await import("hls.js");
    const failed = () => {
      if (stopped) return;
      stop();
      onState("none");
    };
    if (Hls.isSupported()) {
      hls = new Hls({ lowLatencyMode: true, liveSyncDurationCount: 2 });
      hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) failed(); });
      hls.loadSource(src);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = src;
      video.addEventListener("error", failed, { once: true });
    } else {
      throw new Error("no HLS support");
    }
    video.play().catch(() => {});
    onState("hls");
  } catch {
    onState("none");
  }
  return stop;
}
