"""The Chainlit chat and the REST API in one server: `python -m app` (what `make run` runs).

A launcher only: the chat's handlers are `ui/` and the REST API is `api/`, both thin layers
over `services/`. One process serves both and holds the embedded Qdrant store, so uploads
and `/api/ingest` write through it.
"""

from __future__ import annotations

import asyncio
import logging
import os

from core.settings import PROJECT_ROOT, get_settings

# Chainlit reads .chainlit/config.toml and chainlit.md from its app root (default: the cwd).
os.environ.setdefault("CHAINLIT_APP_ROOT", str(PROJECT_ROOT))

from chainlit.server import app as server  # noqa: E402

import ui.handlers  # noqa: E402, F401 (registers the chat's handlers with Chainlit)
from api.server import install  # noqa: E402

log = logging.getLogger("app")

install(server)


def main() -> int:
    import uvicorn
    from chainlit.config import config

    from core.store import StoreUnavailableError, get_client

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    s = get_settings()
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
