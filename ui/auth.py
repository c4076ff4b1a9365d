"""The chat's login, on when `API_KEY` is set (the REST API asks for the same key).

- The password is API_KEY, with any user name; CHAT_USERS="name:password,..." adds named
  logins that know only their own password (not the API key). Compared in constant time.
- Without API_KEY the chat stays open, as the REST API does (and the server refuses to
  listen beyond loopback without it unless ALLOW_OPEN_HOST=true: see app.py).
- Chainlit signs its session tokens (JWT) with CHAINLIT_AUTH_SECRET. When that is unset it
  is derived from API_KEY (HMAC-SHA256 of a fixed label), so it needs no file and survives
  restarts, and changing API_KEY logs every chat session out. Set CHAINLIT_AUTH_SECRET
  yourself to keep sessions across a key change.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import chainlit as cl
from chainlit.config import config
from chainlit.user import PersistedUser
from chainlit.utils import utc_now

from core.settings import Settings, get_settings
from ui.feedback_layer import FeedbackDataLayer

_SECRET_ENV = "CHAINLIT_AUTH_SECRET"
_SECRET_LABEL = b"fcc-rag chainlit session tokens v1"
_DEFAULT_USER = "user"
_derived_secret: str | None = None  # the value we put in the environment, if we did


def derive_jwt_secret(api_key: str) -> str:
    return hmac.new(api_key.encode(), _SECRET_LABEL, hashlib.sha256).hexdigest()


def _same(supplied: str, expected: str) -> bool:
    return secrets.compare_digest(supplied.encode(), expected.encode())


def check_login(username: str, password: str, settings: Settings | None = None) -> str | None:
    """The user's name if the password is API_KEY or the user's CHAT_USERS password."""
    settings = settings or get_settings()
    if not settings.api_key or not password:
        return None
    name = (username or "").strip() or _DEFAULT_USER
    ok = _same(password, settings.api_key)
    own = settings.chat_user_passwords.get(name)
    if own is not None:
        ok = _same(password, own) | ok  # both compared: no timing difference between them
    return name if ok else None


async def password_login(username: str, password: str) -> cl.User | None:
    name = check_login(username, password)
    return cl.User(identifier=name, metadata={"provider": "password"}) if name else None


def install_chat_login(settings: Settings | None = None) -> bool:
    """Turn the chat's login on (API_KEY set) or off (unset); return whether it is on.
    Called at import (ui.handlers); call it again after changing the settings."""
    global _derived_secret
    settings = settings or get_settings()
    if not settings.api_key:
        config.code.password_auth_callback = None
        if _derived_secret is not None and os.environ.get(_SECRET_ENV) == _derived_secret:
            del os.environ[_SECRET_ENV]
            _derived_secret = None
        return False
    if not os.environ.get(_SECRET_ENV) or os.environ.get(_SECRET_ENV) == _derived_secret:
        _derived_secret = derive_jwt_secret(settings.api_key)
        os.environ[_SECRET_ENV] = _derived_secret
    cl.password_auth_callback(password_login)
    return True


class ChatDataLayer(FeedbackDataLayer):
    """The feedback data layer, knowing the logged-in users (in memory, nothing stored):
    with a login, Chainlit asks the data layer for the user, and its thread list answered
    404 "User not found" otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._users: dict[str, PersistedUser] = {}

    async def get_user(self, identifier: str) -> PersistedUser | None:
        return self._users.get(identifier)

    async def create_user(self, user: cl.User) -> PersistedUser:
        persisted = self._users.get(user.identifier)
        if persisted is None:
            persisted = PersistedUser(
                id=user.identifier,
                identifier=user.identifier,
                createdAt=utc_now(),
                display_name=user.display_name,
                metadata=dict(user.metadata or {}),
            )
            self._users[user.identifier] = persisted
        return persisted
