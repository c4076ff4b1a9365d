"""The optional API key.

When `API_KEY` is set, every `/api` and `/v1` route requires it, sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. `GET /api/health` stays open so
liveness probes work without the secret; it reveals nothing but "ok". The chat asks for
the same key on its login page (ui/auth.py). Without API_KEY both are open, and the server
listens on loopback only unless ALLOW_OPEN_HOST=true (app.py).
"""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from core.settings import get_settings

_bearer = HTTPBearer(auto_error=False, description="API_KEY as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API_KEY in a header")


def require_api_key(
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header_key: str | None = Depends(_header),
) -> None:
    expected = get_settings().api_key
    if not expected:
        return
    supplied = header_key or (bearer.credentials if bearer else None)
    if supplied and secrets.compare_digest(supplied.encode(), expected.encode()):
        return
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="This server requires an API key: send `Authorization: Bearer <API_KEY>` "
        "or `X-API-Key: <API_KEY>`.",
        headers={"WWW-Authenticate": "Bearer"},
    )
