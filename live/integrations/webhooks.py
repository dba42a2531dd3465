"""Webhooks: subscriptions, and the sender that turns outbox events into signed POSTs.

Delivery, step by step (every step safe to run in several processes at once, and to kill):

1. *Fan-out.* Each outbox row not yet fanned out is flipped with a conditional UPDATE
   (``fanned_out = false`` → ``true``) in the same transaction that inserts one delivery per
   matching subscription; only the process whose UPDATE changed the row inserts them.
2. *Claim.* A delivery is due when pending, its ``next_at`` has come, no live claim holds it,
   and no earlier delivery of the same ordering key to the same webhook is still pending (that
   is what keeps one order's events in order). A process claims a batch with one conditional
   UPDATE stamping its own token and a lease (``claimed_until``); it gets the rows its token
   holds afterwards. A process killed mid-send leaves its claims to expire; another process (or
   the same one restarted) sends them again: at least once, never lost.
3. *Send.* One POST per delivery with a per-attempt timeout, at most ``webhook_concurrency`` in
   flight per endpoint per process, through a resolver that refuses private addresses at
   connect time. 2xx is delivered; anything else retries with exponential backoff from
   ``webhook_retry_s`` capped at ``webhook_retry_max_s``; after ``webhook_max_attempts`` it is
   ``failed`` (a later event of the same key may then go; a replay can send it again).

The buy path never waits on any of this: it only inserts an outbox row in its own transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from live.core.auth import AuthService, Principal
from live.core.errors import Forbidden, Invalid, NotFound
from live.core.ids import iso, new_id, utcnow
from live.core.models import OutboxEvent, Webhook, WebhookAttempt, WebhookDelivery
from live.core.settings import Settings
from live.integrations import signing, ssrf
from live.integrations.outbox import EVENTS

if TYPE_CHECKING:
    from live.app.services import Services

log = logging.getLogger(__name__)

MAX_WEBHOOKS_PER_SCOPE = 20
FANOUT_BATCH = 200
CLAIM_BATCH = 1000


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every one we store is UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def backoff_s(settings: Settings, attempts: int) -> float:
    """Delay before the next try after ``attempts`` failed ones: doubling from
    ``webhook_retry_s``, capped, with up to 25% jitter so a recovering endpoint is not hit by
    every retry at once."""
    base = min(settings.webhook_retry_s * (2 ** min(attempts - 1, 30)), settings.webhook_retry_max_s)
    return base * random.uniform(0.75, 1.0)


class WebhookService:
    """Subscriptions and the delivery log (what the HTTP routes call)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], settings: Settings, auth: AuthService) -> None:
        self._db = db
        self._settings = settings
        self._auth = auth
        self.wake = asyncio.Event()  # set by a replay, so the local sender looks at once

    async def _scope(self, who: Principal) -> str | None:
        """The shop a caller's webhooks belong to: its own (a streamer), or None (platform-wide,
        a moderator, re-checked in the database)."""
        if who.role == "moderator":
            await self._auth.require_moderator(who)
            return None
        if who.role == "streamer":
            return who.id
        raise Forbidden("webhooks are for streamers (their shop) and moderators (the platform)")

    async def _own(self, s: AsyncSession, who: Principal, webhook_id: str) -> Webhook:
        scope = await self._scope(who)
        hook = await s.get(Webhook, webhook_id)
        if hook is None or hook.shop_id != scope:
            raise NotFound("no such webhook")  # someone else's is as good as absent
        return hook

    @staticmethod
    def _view(h: Webhook) -> dict[str, Any]:
        return {"id": h.id, "url": h.url, "events": list(h.events), "shop_id": h.shop_id,
                "created_at": iso(h.created_at), "previous_secret_valid_until": iso(h.prev_until)}

    async def create(self, who: Principal, url: str, events: list[str]) -> dict[str, Any]:
        scope = await self._scope(who)
        unknown = sorted(set(events) - set(EVENTS))
        if unknown:
            raise Invalid(f"unknown event(s): {', '.join(unknown)}; known: {', '.join(EVENTS)}")
        if not events:
            raise Invalid("events must name at least one event")
        try:
            await ssrf.check_url(url, self._settings.webhook_allow_private)
        except ssrf.Refused as e:
            raise Invalid(f"url refused: {e}") from e
        async with self._db() as s, s.begin():
            n = (await s.execute(select(func.count()).select_from(Webhook).where(
                Webhook.shop_id.is_(None) if scope is None else Webhook.shop_id == scope))).scalar_one()
            if n >= MAX_WEBHOOKS_PER_SCOPE:
                raise Invalid(f"at most {MAX_WEBHOOKS_PER_SCOPE} webhooks per shop")
            hook = Webhook(id=new_id(), owner_id=who.id, shop_id=scope, url=url,
                           events=sorted(set(events), key=EVENTS.index), secret=new_secret(),
                           prev_secret=None, prev_until=None, created_at=utcnow())
            s.add(hook)
        return {**self._view(hook), "secret": hook.secret}

    async def listing(self, who: Principal) -> list[dict[str, Any]]:
        scope = await self._scope(who)
        async with self._db() as s:
            rows = (await s.execute(select(Webhook).where(
                Webhook.shop_id.is_(None) if scope is None else Webhook.shop_id == scope)
                .order_by(Webhook.created_at))).scalars().all()
        return [self._view(h) for h in rows]

    async def delete(self, who: Principal, webhook_id: str) -> dict[str, Any]:
        async with self._db() as s, s.begin():
            hook = await self._own(s, who, webhook_id)
            # Explicitly, children first: SQLite does not enforce ON DELETE CASCADE by default.
            ids = select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook.id)
            await s.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
            await s.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
            await s.delete(hook)
        return {"id": webhook_id, "deleted": True}

    async def rotate(self, who: Principal, webhook_id: str, grace_s: float | None) -> dict[str, Any]:
        """A new secret; the current one keeps signing (as a second ``v1``) for ``grace_s``."""
        grace = self._settings.webhook_rotation_grace_s if grace_s is None else grace_s
        async with self._db() as s, s.begin():
            hook = await self._own(s, who, webhook_id)
            hook.prev_secret, hook.prev_until = hook.secret, utcnow() + timedelta(seconds=grace)
            hook.secret = new_secret()
        return {**self._view(hook), "secret": hook.secret}

    async def deliveries(self, who: Principal, webhook_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first, each with its attempt log (time, response code or error, duration)."""
        async with self._db() as s:
            hook = await self._own(s, who, webhook_id)
            rows = (await s.execute(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
                                    .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.seq.desc(),
                                              WebhookDelivery.id.desc())
                                    .limit(limit))).scalars().all()
            logs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            if rows:
                for a in (await s.execute(select(WebhookAttempt).where(
                        WebhookAttempt.delivery_id.in_([d.id for d in rows])).order_by(WebhookAttempt.id))).scalars():
                    logs[a.delivery_id].append({"at": iso(a.at), "code": a.code, "error": a.error, "ms": a.ms})
        return [{"id": d.id, "event_id": d.event_id, "type": d.event_type, "ordering_key": d.ordering_key,
                 "status": d.status, "attempts": d.attempts, "last_code": d.last_code, "last_error": d.last_error,
                 "next_at": iso(d.next_at) if d.status == "pending" else None, "replay_of": d.replay_of,
                 "created_at": iso(d.created_at), "finished_at": iso(d.finished_at), "log": logs[d.id]}
                for d in rows]

    async def replay(self, who: Principal, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a delivery's event again, as a new delivery (a new ``X-Live-Delivery``, the same
        event id, so a receiver that already has it can tell)."""
        async with self._db() as s, s.begin():
            hook = await self._own(s, who, webhook_id)
            old = await s.get(WebhookDelivery, delivery_id)
            if old is None or old.webhook_id != hook.id:
                raise NotFound("no such delivery")
            now = utcnow()
            new = WebhookDelivery(id=new_id(), webhook_id=hook.id, event_id=old.event_id, event_type=old.event_type,
                                  ordering_key=old.ordering_key, seq=old.seq, status="pending", attempts=0,
                                  next_at=now, replay_of=old.id, created_at=now)
            s.add(new)
        self.wake.set()
        return {"id": new.id, "event_id": new.event_id, "type": new.event_type, "status": "pending",
                "replay_of": old.id}


class Sender:
    """The background loop of one process: fan out, claim, send (see the module docstring)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], settings: Settings, proc_id: str,
                 wake: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
        self._db = db
        r = registry or CollectorRegistry()
        self.m_attempts = Counter("live_webhook_attempts_total", "Webhook POSTs by result",
                                  ["result"], registry=r)  # delivered | retry | failed
        self.m_seconds = Histogram("live_webhook_attempt_seconds", "Webhook POST duration", registry=r,
                                   buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.m_events = Counter("live_webhook_events_total", "Outbox events fanned out", registry=r)
        self._s = settings
        self._proc_id = proc_id
        self._wake = wake
        self._inflight: dict[str, int] = defaultdict(int)  # webhook id -> sends in flight here
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        # A claim outlives one attempt's timeout with room for the bookkeeping after it; a
        # process that dies holding it only delays that delivery by this much.
        self.lease_s = 2 * settings.webhook_timeout_s + 2

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(resolver=ssrf.GuardedResolver(self._s.webhook_allow_private),
                                         limit=0, limit_per_host=self._s.webhook_concurrency)
        self._http = aiohttp.ClientSession(connector=connector, trust_env=False,
                                           timeout=aiohttp.ClientTimeout(total=self._s.webhook_timeout_s))
        next_prune = 0.0
        try:
            while not stop.is_set():
                try:
                    await self.fan_out_once()
                    await self.dispatch_once()
                    if time.monotonic() >= next_prune:
                        await self.prune_once()
                        next_prune = time.monotonic() + min(600.0, self._s.webhook_retention_s)
                except Exception as e:  # the database away, a lost SQLite write race: next tick
                    log.warning("webhook sender: %s", e)
                self._wake.clear()
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
                await asyncio.wait(waiters, timeout=self._s.webhook_poll_s, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
        finally:
            # Sends cut short here are claimed again once their lease runs out.
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._http.close()

    async def prune_once(self) -> None:
        """Forget deliveries finished longer than ``webhook_retention_s`` ago, their log, and
        events no delivery refers to any more (idempotent: any process may run it)."""
        cutoff = utcnow() - timedelta(seconds=self._s.webhook_retention_s)
        D = WebhookDelivery
        old = (D.status != "pending", D.finished_at < cutoff)
        async with self._db() as s, s.begin():
            await s.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(select(D.id).where(*old))))
            await s.execute(delete(D).where(*old))
            await s.execute(delete(OutboxEvent).where(OutboxEvent.fanned_out.is_(True), OutboxEvent.created_at < cutoff,
                                                      ~exists().where(D.event_id == OutboxEvent.id)))

    async def fan_out_once(self) -> int:
        """Turn new outbox events into deliveries; returns how many events this process took."""
        async with self._db() as s, s.begin():
            events = (await s.execute(select(OutboxEvent).where(OutboxEvent.fanned_out.is_(False))
                                      .order_by(OutboxEvent.seq).limit(FANOUT_BATCH))).scalars().all()
            if not events:
                return 0
            # Whoever flips the flag fans out: an UPDATE of the rows still unflipped, RETURNING
            # the ones it changed (on PostgreSQL a second process waits for the first one's
            # commit, then finds them flipped). Not SKIP LOCKED: a process skipping ahead would
            # create a later event's delivery before an earlier one's of the same order exists.
            seqs = [e.seq for e in events]
            res = await s.execute(update(OutboxEvent)
                                  .where(OutboxEvent.seq.in_(seqs), OutboxEvent.fanned_out.is_(False))
                                  .values(fanned_out=True).returning(OutboxEvent.seq)
                                  .execution_options(synchronize_session=False))
            mine = {seq for (seq,) in res}
            hooks = (await s.execute(select(Webhook))).scalars().all()
            now = utcnow()
            rows = [{"id": new_id(), "webhook_id": h.id, "event_id": ev.id, "event_type": ev.type,
                     "ordering_key": ev.ordering_key, "seq": ev.seq, "status": "pending", "attempts": 0,
                     "next_at": now, "created_at": now}
                    for ev in events if ev.seq in mine
                    for h in hooks if ev.type in h.events and (h.shop_id is None or h.shop_id == ev.shop_id)]
            if rows:
                await s.execute(insert(WebhookDelivery), rows)
            taken = len(mine)
        self.m_events.inc(taken)
        return taken

    async def dispatch_once(self) -> int:
        """Claim due deliveries this process has room for, and start sending them."""
        now = utcnow()
        D = WebhookDelivery
        E = aliased(WebhookDelivery)
        earlier_pending = exists().where(E.webhook_id == D.webhook_id, E.ordering_key == D.ordering_key,
                                         E.status == "pending", or_(E.seq < D.seq, and_(E.seq == D.seq, E.id < D.id)))
        unclaimed = or_(D.claimed_until.is_(None), D.claimed_until < now)
        # The oldest few due deliveries *of each webhook*: a dead endpoint's backlog never fills
        # the batch and starves the others.
        rank = func.row_number().over(partition_by=D.webhook_id, order_by=(D.seq, D.id)).label("rank")
        ranked = (select(D.id, D.webhook_id, D.seq, rank)
                  .where(D.status == "pending", D.next_at <= now, unclaimed, ~earlier_pending).subquery())
        async with self._db() as s:
            due = (await s.execute(select(ranked.c.id, ranked.c.webhook_id)
                                   .where(ranked.c.rank <= self._s.webhook_concurrency)
                                   .order_by(ranked.c.seq, ranked.c.id).limit(CLAIM_BATCH))).all()
        room = {w: self._s.webhook_concurrency - n for w, n in self._inflight.items()}
        free = self._s.webhook_max_inflight - sum(self._inflight.values())
        want: list[str] = []
        for delivery_id, webhook_id in due:
            if len(want) >= free:
                break
            if room.get(webhook_id, self._s.webhook_concurrency) > 0:
                room[webhook_id] = room.get(webhook_id, self._s.webhook_concurrency) - 1
                want.append(delivery_id)
        if not want:
            return 0
        token = f"{self._proc_id}:{new_id()}"[:96]
        async with self._db() as s, s.begin():
            await s.execute(update(D).where(D.id.in_(want), D.status == "pending", unclaimed)
                            .values(claimed_by=token, claimed_until=now + timedelta(seconds=self.lease_s))
                            .execution_options(synchronize_session=False))
            # What we now hold, with its webhook and event: a send needs nothing more.
            mine = (await s.execute(select(D, Webhook, OutboxEvent).join(Webhook, Webhook.id == D.webhook_id)
                                    .join(OutboxEvent, OutboxEvent.id == D.event_id)
                                    .where(D.claimed_by == token))).all()
        for d, hook, ev in mine:
            self._inflight[hook.id] += 1
            task = asyncio.create_task(self._send(d, hook, ev, token), name=f"webhook-{d.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(mine)

    async def _send(self, d: WebhookDelivery, hook: Webhook, ev: OutboxEvent, token: str) -> None:
        try:
            await self.send(d, hook, ev, token)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", d.id)
        finally:
            self._inflight[hook.id] -= 1
            if self._inflight[hook.id] <= 0:
                del self._inflight[hook.id]
            self._wake.set()  # a slot is free and the key's next event may be due

    async def send(self, d: WebhookDelivery, hook: Webhook, ev: OutboxEvent, token: str) -> None:
        """One attempt of one claimed delivery (``token`` holds its claim), and its outcome
        recorded."""
        assert self._http is not None
        body = orjson.dumps({"id": ev.id, "type": ev.type, "created_at": iso(ev.created_at), "data": ev.data})
        now = utcnow()
        keys = [hook.secret]
        prev_until = _aware(hook.prev_until)
        if hook.prev_secret and prev_until is not None and prev_until > now:
            keys.append(hook.prev_secret)
        headers = {"Content-Type": "application/json", "User-Agent": "live-commerce-webhooks/1",
                   "X-Live-Event": ev.type, "X-Live-Delivery": d.id, "X-Live-Signature": signing.header(keys, body)}
        code: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            host, _ = ssrf.parse_target(hook.url)
            ip = ssrf.literal(host)  # literal IPs never reach the resolver: check them here
            if ip is not None and not self._s.webhook_allow_private and not ssrf.allowed(ip):
                raise ssrf.Refused(f"{ip} is not a public address")
            async with self._http.post(hook.url, data=body, headers=headers, allow_redirects=False) as r:
                code = r.status
                await r.content.readany()  # a receiver's answer is not ours to keep
        except TimeoutError:
            error = f"timeout after {self._s.webhook_timeout_s}s"
        except Exception as e:  # whatever went wrong, it is a failed attempt, logged and retried
            error = f"{type(e).__name__}: {e}"[:300]
        ms = int((time.perf_counter() - t0) * 1000)
        ok = code is not None and 200 <= code < 300
        if not ok and error is None:
            error = f"HTTP {code}"
        attempts = d.attempts + 1
        done = utcnow()
        values: dict[str, Any] = {"attempts": attempts, "last_code": code, "last_error": None if ok else error,
                                  "claimed_by": None, "claimed_until": None}
        self.m_seconds.observe(ms / 1000)
        if ok:
            values.update(status="delivered", finished_at=done)
        elif (attempts >= self._s.webhook_max_attempts
              or done - (_aware(ev.created_at) or done) > timedelta(seconds=self._s.webhook_max_age_s)):
            values.update(status="failed", finished_at=done)
        else:
            values.update(next_at=done + timedelta(seconds=backoff_s(self._s, attempts)))
        async with self._db() as s, s.begin():
            # Only while the claim is still ours: past the lease another process may have sent
            # it again, and its outcome is the one to keep (this attempt is still logged).
            res = await s.execute(update(WebhookDelivery).where(WebhookDelivery.id == d.id,
                                                                WebhookDelivery.claimed_by == token)
                                  .values(**values).execution_options(synchronize_session=False))
            if getattr(res, "rowcount", 0) != 1 and await s.get(WebhookDelivery, d.id) is None:
                return  # its webhook was deleted while we sent
            s.add(WebhookAttempt(delivery_id=d.id, at=now, code=code, error=None if ok else error, ms=ms))
        self.m_attempts.labels(values.get("status", "retry")).inc()


def install(svc: Services) -> None:
    """Build the webhook service and add the sender loop."""
    service = WebhookService(svc.db, svc.settings, svc.auth)
    sender = Sender(svc.db, svc.settings, svc.proc_id, service.wake, svc.metrics.registry)
    svc.webhooks = service
    svc.add_loop("webhook-sender", sender.run, "background")
