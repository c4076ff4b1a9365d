"""The Chainlit chat and the REST API in one server: `python -m app` (what `make run` runs).

A launcher only: the chat's handlers are `ui/` and the REST API is `api/`, both thin layers
over `services/`. One process serves both and holds the embedded Qdrant store, so uploads
and `/api/ingest` write through it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os

from core.settings import PROJECT_ROOT, Settings, get_settings

# Chainlit reads .chainlit/config.toml and chainlit.md from its app root (default: the cwd).
os.environ.setdefault("CHAINLIT_APP_ROOT", str(PROJECT_ROOT))

from chainlit.server import app as server  # noqa: E402

import ui.handlers  # noqa: E402, F401 (registers the chat's handlers with Chainlit)
from api.server import install  # noqa: E402

log = logging.getLogger("app")

install(server)

EXIT_UNSAFE_HOST = 2


class UnsafeHostError(RuntimeError):
    """HOST reaches beyond this machine and nothing guards the server."""


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_host(settings: Settings) -> str | None:
    """Refuse (UnsafeHostError) to listen beyond loopback without API_KEY, unless
    ALLOW_OPEN_HOST=true, which gets a warning (returned) instead."""
    if is_loopback(settings.host) or settings.api_key:
        return None
    message = (
        f"HOST={settings.host} accepts connections from other machines and API_KEY is not "
        "set, so anyone who reaches this port could use the chat and the REST API (swap "
        "the model, ingest and delete documents, write feedback)."
    )
    if not settings.allow_open_host:
        raise UnsafeHostError(
            f"{message} Refusing to start: set API_KEY (the REST API and the chat login then "
            "require it), or HOST=127.0.0.1, or ALLOW_OPEN_HOST=true to run open anyway."
        )
    return f"{message} Running open because ALLOW_OPEN_HOST=true."


def main() -> int:
    import uvicorn
    from chainlit.config import config

    from core.store import StoreUnavailableError, get_client

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = get_settings()
    try:
        warning = check_host(s)
    except UnsafeHostError as error:
        log.error("%s", error)
        return EXIT_UNSAFE_HOST
    if warning:
        log.warning("!" * 78)
        log.warning("%s", warning)
        log.warning("!" * 78)
    try:
        get_client(s)  # the embedded store allows one process per folder: this one holds it
    except StoreUnavailableError as error:
        log.error("%s", error)
        return 1
    config.run.host, config.run.port, config.run.headless = s.host, s.port, True
    uvicorn_config = uvicorn.Config(
        server, host=s.host, port=s.port, log_level="warning", ws="auto"
    )
    asyncio.run(uvicorn.Server(uvicorn_config).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
