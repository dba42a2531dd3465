"""Identity: guests, registered users, roles, signed expiring tokens, password hashing.

Passwords are hashed with Argon2id (argon2-cffi) in a pool of their own (:class:`HashPool`):
a few threads and a bounded queue, so a login storm is refused (``UNAVAILABLE``) instead of
starving the shared thread pool that image and file work runs on.

Tokens are HS256 JWTs carrying the user's id, name and role, but a token's role is never
trusted alone: :meth:`AuthService.current` gives the user's *current* role (Redis holds it,
each process caches it for ``role_cache_s`` and drops its copy on a ``CH_ROLE`` notice), so a
demotion or a deletion takes effect on every process within seconds, whatever the token says.

Names: usernames are unique after NFKC + casefold (``Alice`` and ``alice`` collide); names
carrying control, format (bidi overrides, zero-width) or unassigned characters, and reserved
names (admin, moderator, system, ...), are refused, guests' display names included.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core import keys
from live.core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized, Unavailable
from live.core.ids import new_id, utcnow
from live.core.models import User

log = logging.getLogger(__name__)

ROLES = ("viewer", "streamer", "moderator")
# A role read from a token or from Redis is a new string each time; every principal and cache
# entry keeps one of these three instead (~55 bytes less per connection and per cached user).
_ROLE_CONSTANTS = {r: r for r in ROLES}
ADMIN_ID = "admin"
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")
# Names nobody may take (compared after canonicalisation, ignoring separators): they would
# pass for the platform or its staff in chat.
RESERVED_NAMES = frozenset({
    "admin", "administrator", "moderator", "system", "root", "staff", "support", "official",
    "security", "server", "null", "undefined", "管理员", "系统", "官方", "客服", "主播助理",
})
# Unicode categories refused in names: controls, format characters (bidi overrides and
# isolates, zero-width space/joiners, BOM), surrogates, private use, unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
ROLE_CACHE_MAX = 100_000  # users whose role a process remembers; past it the cache starts over
# How long Redis's copy of a role lives before it is read from SQL again: bounds how long a Redis
# restored from an older snapshot can bring back a role that was since changed.
ROLE_REDIS_TTL_S = 60


def canonical_name(name: str) -> str:
    """The form two names are compared in: NFKC, casefolded, NFKC again (Unicode's
    NFKC_Casefold, near enough): ``Alice``, ``alice`` and ``ａｌｉｃｅ`` are one name."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_name(name: str, what: str = "name") -> None:
    """Refuse a display name or username that is unprintable, deceptive or reserved."""
    for ch in name:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise Invalid(f"{what}: contains an invisible or control character (U+{ord(ch):04X})")
    if canonical_name(name).strip(" _.-") in RESERVED_NAMES:
        raise Invalid(f"{what}: this name is reserved")


class HashPool:
    """Argon2 off the event loop on its own few threads, with a bounded queue.

    At most ``workers`` hashes run and ``queue`` more wait; past that a request is refused at
    once (``UNAVAILABLE``), so a storm of logins costs bounded CPU and never delays the shared
    executor (``asyncio.to_thread``) that image and file work uses."""

    def __init__(self, workers: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._slots = workers + queue
        self.busy = 0      # hashes running or waiting (a gauge)
        self.refused = 0   # hashes refused because the pool was full (a counter)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.busy >= self._slots:
            self.refused += 1
            raise Unavailable("too many sign-ins at once; retry in a moment", limit="password_hash_pool")
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.busy -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the authenticated user as the token (or admin credential) says."""

    id: str
    name: str
    role: str

    @property
    def is_moderator(self) -> bool:
        return self.role == "moderator"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role}


def load_or_create_secret(configured: str, data_dir: Path, filename: str = "secret.key", nbytes: int = 48) -> str:
    """A secret (by default the signing key): the configured one, or one generated once and kept
    in ``data_dir/filename``."""
    if configured:
        return configured
    path = data_dir / filename
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when several workers start at once, exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty") from None
    key = secrets.token_urlsafe(nbytes)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


class AuthService:
    """Users and tokens. ``name_guard`` (the trust & safety guard) vets display names."""

    def __init__(self, db: async_sessionmaker[AsyncSession], secret: str, token_ttl_s: int,
                 admin_token: str = "", *, redis: Any = None, role_cache_s: float = 2.0,
                 hash_workers: int = 2, hash_queue: int = 16) -> None:
        self._db = db
        self._secret = secret
        self._ttl = token_ttl_s
        self._admin_token = admin_token
        self._hasher = PasswordHasher()
        self.hash_pool = HashPool(hash_workers, hash_queue)
        self._redis = redis
        self._role_cache_s = role_cache_s
        self._roles: dict[str, tuple[float, str]] = {}  # user id -> (valid until, role or "" if gone)
        # Loads under way: a user's taps in flight that all find the role expired share one read.
        self._loading: dict[str, asyncio.Future[str]] = {}
        self.on_role_change: Callable[[str], Any] | None = None  # publishes CH_ROLE; set by the app
        self.name_guard: Any = None  # callable(text) -> None or raise Blocked; set by the app

    # --- tokens ---------------------------------------------------------------------
    def issue(self, user: Principal) -> str:
        now = int(utcnow().timestamp())
        payload = {"sub": user.id, "name": user.name, "role": user.role, "iat": now, "exp": now + self._ttl}
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def verify(self, token: str | None) -> Principal:
        """The principal a token names, or ``Unauthorized`` (missing, forged, expired)."""
        if not token or not isinstance(token, str):
            raise Unauthorized("missing token")
        if self._admin_token and hmac.compare_digest(token.encode(), self._admin_token.encode()):
            return Principal(ADMIN_ID, "admin", "moderator")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError as e:
            raise Unauthorized("token expired") from e
        except jwt.PyJWTError as e:
            raise Unauthorized("invalid token") from e
        claimed = claims.get("role")
        role = _ROLE_CONSTANTS.get(claimed) if isinstance(claimed, str) else None
        if role is None:
            raise Unauthorized("invalid token")
        return Principal(str(claims["sub"]), str(claims.get("name", "")), role)

    # --- the current role -----------------------------------------------------------------
    async def current(self, who: Principal) -> Principal:
        """``who`` with the user's current role, or ``Unauthorized`` if the user is gone."""
        known = self.current_now(who)
        if known is not None:
            return known
        now = time.monotonic()
        role = await self._load_role_once(who.id)
        if len(self._roles) >= ROLE_CACHE_MAX:
            self._roles.clear()
        self._roles[who.id] = (now + self._role_cache_s, role)
        return _with_role(who, role)

    def current_now(self, who: Principal) -> Principal | None:
        """:meth:`current` when this process knows the role (no wait); None when it must be
        loaded (then await :meth:`current`)."""
        if who.id == ADMIN_ID and who.role == "moderator":
            return who
        hit = self._roles.get(who.id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return _with_role(who, hit[1])

    def forget_role(self, user_id: str) -> None:
        """Drop this process's cached role of ``user_id`` (a ``CH_ROLE`` notice)."""
        self._roles.pop(user_id, None)

    async def _load_role_once(self, user_id: str) -> str:
        """:meth:`_load_role`, one read per user at a time: concurrent callers wait for it."""
        pending = self._loading.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._loading[user_id] = fut
        try:
            role = await self._load_role(user_id)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # retrieved here: the waiters (if any) get it raised
            raise
        else:
            fut.set_result(role)
            return role
        finally:
            if self._loading.get(user_id) is fut:
                del self._loading[user_id]

    async def _load_role(self, user_id: str) -> str:
        if self._redis is not None:
            cached = await self._redis.get(keys.user_role(user_id))
            if cached is not None:
                text = cached.decode() if isinstance(cached, bytes) else str(cached)
                return _ROLE_CONSTANTS.get(text, text)
        async with self._db() as s:
            role = (await s.execute(select(User.role).where(User.id == user_id))).scalar_one_or_none()
        role = _ROLE_CONSTANTS.get(role, role) if role else ""
        if self._redis is not None:
            # NX: a role change that committed meanwhile has SET the newer value; never overwrite it.
            await self._redis.set(keys.user_role(user_id), role, nx=True, ex=ROLE_REDIS_TTL_S)
        return role

    async def _publish_role(self, user_id: str, role: str) -> None:
        """After a role change committed: the new role for every process, now."""
        self._roles.pop(user_id, None)
        if self._redis is not None:
            await self._redis.set(keys.user_role(user_id), role, ex=ROLE_REDIS_TTL_S)
        if self.on_role_change is not None:
            await self.on_role_change(user_id)

    async def _issued(self, user: User) -> dict[str, Any]:
        """A token for ``user``, with its role written through to Redis: a client that signs in
        and connects at once (a storm of new viewers) is authorised without asking SQL, so a
        database outage right after sign-in does not refuse it."""
        if self._redis is not None:
            await self._redis.set(keys.user_role(user.id), user.role, nx=True, ex=ROLE_REDIS_TTL_S)
        return self._result(user)

    def _result(self, user: User) -> dict[str, Any]:
        p = Principal(user.id, user.name, user.role)
        return {"token": self.issue(p), "user": p.public()}

    def _vet_name(self, name: str) -> None:
        if self.name_guard is not None:
            self.name_guard(name)

    # --- accounts -----------------------------------------------------------------------
    async def guest(self, name: str) -> dict[str, Any]:
        check_name(name)
        self._vet_name(name)
        user = User(id=new_id(), username=None, name=name, role="viewer", password_hash=None, created_at=utcnow())
        async with self._db() as s, s.begin():
            s.add(user)
        return await self._issued(user)

    async def register(self, username: str, password: str, role: str) -> dict[str, Any]:
        if role not in ("viewer", "streamer"):
            raise Invalid("role must be viewer or streamer")
        if not USERNAME_RE.match(username):
            raise Invalid("username: 3-32 letters, digits, '_', '.', '-'")
        if not 8 <= len(password) <= 256:
            raise Invalid("password: 8 to 256 characters")
        check_name(username, "username")
        self._vet_name(username)
        canonical = canonical_name(username)
        async with self._db() as s:
            taken = (await s.execute(select(User.id).where(User.username_canonical == canonical))).first()
        if taken is not None:
            raise Conflict("username taken")
        hashed = await self.hash_pool.run(self._hasher.hash, password)
        user = User(id=new_id(), username=username, username_canonical=canonical, name=username, role=role,
                    password_hash=hashed, created_at=utcnow())
        try:
            async with self._db() as s, s.begin():
                s.add(user)
        except IntegrityError as e:
            raise Conflict("username taken") from e
        return await self._issued(user)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        async with self._db() as s:
            # The exact name first (accounts of older databases that collide after
            # canonicalisation keep signing in with their own spelling), then the canonical one.
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
            if user is None:
                user = (await s.execute(select(User).where(
                    User.username_canonical == canonical_name(username)))).scalar_one_or_none()
        if user is None or user.password_hash is None:
            # Hash anyway so that timing does not tell which usernames exist.
            await self.hash_pool.run(self._hasher.hash, password)
            raise Unauthorized("wrong username or password")
        try:
            await self.hash_pool.run(self._hasher.verify, user.password_hash, password)
        except (VerifyMismatchError, InvalidHashError) as e:
            raise Unauthorized("wrong username or password") from e
        return await self._issued(user)

    async def get_user(self, user_id: str) -> User | None:
        async with self._db() as s:
            return await s.get(User, user_id)

    async def require_moderator(self, who: Principal) -> None:
        """Moderator rights by the user's current role (promotions and demotions post-date tokens)."""
        try:
            current = await self.current(who)
        except Unauthorized:
            raise Forbidden("moderators only") from None
        if current.role != "moderator":
            raise Forbidden("moderators only")

    async def is_moderator(self, who: Principal) -> bool:
        try:
            await self.require_moderator(who)
        except Forbidden:
            return False
        return True

    async def set_role(self, actor: Principal, user_id: str, role: str) -> dict[str, Any]:
        """A moderator promotes (or demotes) a user; the user's next token carries the role."""
        await self.require_moderator(actor)
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        async with self._db() as s, s.begin():
            user = await s.get(User, user_id)
            if user is None:
                raise NotFound("no such user")
            user.role = role
        await self._publish_role(user.id, role)
        return {"id": user.id, "name": user.name, "role": user.role}

    async def refresh(self, who: Principal) -> dict[str, Any]:
        """A new token with the user's current role (after a promotion)."""
        user = await self.get_user(who.id)
        if user is None:
            raise Unauthorized("user gone")
        return await self._issued(user)


def _with_role(who: Principal, role: str) -> Principal:
    if not role:
        raise Unauthorized("this account no longer exists")
    return who if role == who.role else Principal(who.id, who.name, role)
