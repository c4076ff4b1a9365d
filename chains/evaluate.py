"""`python -m chains.evaluate` keeps working: the evaluation harness is the `evals` package (`fcc-rag`).

Run by name, not imported, so the library layers below the commands never depend on them.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("evals", run_name="__main__", alter_sys=True)
