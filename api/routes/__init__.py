"""FastAPI routers; `api.server.install` adds them to the Chainlit server."""
