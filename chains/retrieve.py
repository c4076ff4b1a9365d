"""`python -m chains.retrieve` keeps working: the command lives in cli/retrieve.py (`fcc-rag`).

Run by name, not imported, so the library layers below the commands never depend on them.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("cli.retrieve", run_name="__main__", alter_sys=True)
