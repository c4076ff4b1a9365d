"""`python -m chains.ask` keeps working: the command lives in cli/ask.py (`fcc-rag`).

Run by name, not imported, so the library layers below the commands never depend on them.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("cli.ask", run_name="__main__", alter_sys=True)
