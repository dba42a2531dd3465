"""Identity: guests, registered users, roles, signed expiring tokens, password hashing.

Passwords are hashed with Argon2id (argon2-cffi) off the event loop. Tokens are HS256 JWTs
carrying the user's id, name and role; a moderator's rights are re-checked in the database
because a promotion happens after a token was issued.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from live.core.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from live.core.ids import new_id, utcnow
from live.core.models import User

ROLES = ("viewer", "streamer", "moderator")
ADMIN_ID = "admin"
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")


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
                 admin_token: str = "") -> None:
        self._db = db
        self._secret = secret
        self._ttl = token_ttl_s
        self._admin_token = admin_token
        self._hasher = PasswordHasher()
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
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthorized("invalid token")
        return Principal(str(claims["sub"]), str(claims.get("name", "")), role)

    def _result(self, user: User) -> dict[str, Any]:
        p = Principal(user.id, user.name, user.role)
        return {"token": self.issue(p), "user": p.public()}

    def _vet_name(self, name: str) -> None:
        if self.name_guard is not None:
            self.name_guard(name)

    # --- accounts -----------------------------------------------------------------------
    async def guest(self, name: str) -> dict[str, Any]:
        self._vet_name(name)
        user = User(id=new_id(), username=None, name=name, role="viewer", password_hash=None, created_at=utcnow())
        async with self._db() as s, s.begin():
            s.add(user)
        return self._result(user)

    async def register(self, username: str, password: str, role: str) -> dict[str, Any]:
        if role not in ("viewer", "streamer"):
            raise Invalid("role must be viewer or streamer")
        if not USERNAME_RE.match(username):
            raise Invalid("username: 3-32 letters, digits, '_', '.', '-'")
        if not 8 <= len(password) <= 256:
            raise Invalid("password: 8 to 256 characters")
        self._vet_name(username)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        user = User(id=new_id(), username=username, name=username, role=role, password_hash=hashed,
                    created_at=utcnow())
        try:
            async with self._db() as s, s.begin():
                s.add(user)
        except IntegrityError as e:
            raise Conflict("username taken") from e
        return self._result(user)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        async with self._db() as s:
            user = (await s.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None or user.password_hash is None:
            # Hash anyway so that timing does not tell which usernames exist.
            await asyncio.to_thread(self._hasher.hash, password)
            raise Unauthorized("wrong username or password")
        try:
            await asyncio.to_thread(self._hasher.verify, user.password_hash, password)
        except (VerifyMismatchError, InvalidHashError) as e:
            raise Unauthorized("wrong username or password") from e
        return self._result(user)

    async def get_user(self, user_id: str) -> User | None:
        async with self._db() as s:
            return await s.get(User, user_id)

    async def require_moderator(self, who: Principal) -> None:
        """Moderator rights, checked against the database (promotions post-date tokens)."""
        if who.id == ADMIN_ID and who.role == "moderator":
            return
        user = await self.get_user(who.id)
        if user is None or user.role != "moderator":
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
        return {"id": user.id, "name": user.name, "role": user.role}

    async def refresh(self, who: Principal) -> dict[str, Any]:
        """A new token with the user's current role (after a promotion)."""
        user = await self.get_user(who.id)
        if user is None:
            raise Unauthorized("user gone")
        return self._result(user)
