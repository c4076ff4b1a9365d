"""How every command line reports the project's own errors: one line on stderr, exit code 2.

Each CLI `main` is wrapped with `@cli_errors`. An error the user can fix (a missing model,
a bad adapter folder, a store another process holds, a malformed gold or training file, a
bad option) becomes `error: <message>` on one line and exit status 2; anything else is a bug
and keeps its traceback.

The error classes live in the layers above `core` (chains, evals, finetune), which `core`
must not import (pyproject's import-linter layers), so they are named here by their
qualified names; tests/test_cli_errors.py checks that every name still exists.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USER_ERROR = 2

# The project's own "you can fix this" errors, by module.qualname (subclasses count too).
USER_ERRORS = frozenset(
    {
        "core.models.ModelNotFoundError",
        "core.adapters.AdapterNotFoundError",
        "core.store.StoreUnavailableError",
        "chains.adapter_set.AdapterError",
        "chains.summarize.SourceNotFoundError",
        "evals.schema.EvaluationError",
        "finetune.data.DataError",
        "finetune.memory.MemoryWouldNotFitError",
        "services.assistant.ModelLoadError",
    }
)
# Bad option values and missing input files, wherever they are raised.
BUILTIN_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., int])


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, BUILTIN_USER_ERRORS):
        return True
    return any(qualified_name(cls) in USER_ERRORS for cls in type(error).__mro__)


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report(error: BaseException, stream=None) -> int:
    """Print the one-line message; return the exit status."""
    print(f"error: {one_line(error)}", file=stream or sys.stderr, flush=True)
    log.debug("details", exc_info=error)
    return EXIT_USER_ERROR


def cli_errors(main: F) -> F:
    """Wrap a CLI `main`: the project's errors become one stderr line and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as error:
            if not is_user_error(error):
                raise
            return report(error)

    return wrapper  # type: ignore[return-value]
