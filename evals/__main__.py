from core.store import close_clients
from evals.cli import main

try:
    status = main()
finally:
    close_clients()  # before interpreter shutdown, which the embedded store's __del__ trips over
raise SystemExit(status)
