"""Run a command line of the form `python -m proxy ...` on uvloop's event loop: the bench's us-uvloop target.

    python bench/uvloop_launcher.py /path/to/python -m proxy serve --config FILE

The proxy itself runs on asyncio's loop: uvloop has no `loop.sendfile`, so
cached blobs would be copied through Python instead. This target measures
what uvloop would change, in the same run as the rest.
"""

from __future__ import annotations

import runpy
import sys

import uvloop

if __name__ == "__main__":
    _python, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(f"expected `python -m MODULE ...`, not {sys.argv[1:]}")
    sys.argv = [module, *args]
    uvloop.install()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
