"""``registry-proxy cache verify``: re-hash everything the running proxy has cached.

The proxy does the work, in its own background, so its accounting and its
readers stay consistent; this command starts a run, follows it, and prints
its counts. It exits 1 when some content did not match its digest (that
content was moved to ``<data_dir>/cache/quarantine`` and is fetched again on
the next request), so a cron job or CI step notices.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from proxy.cli.client import AdminClient, AdminError
from proxy.cli.output import print_fields, print_json, text
from proxy.cli.parsing import Actions, leaf
from proxy.humanize import human_bytes

__all__ = ["add_cache_parser"]

# How often a run's progress is asked for.
POLL = 0.5
_COUNTS = ("objects", "checked", "mismatched", "quarantined", "missing", "skipped")


def add_cache_parser(sub: Actions, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser("cache", help="check the content cache (admin API)",
                           description="The running proxy's content cache.")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf(actions, "verify", common, _verify, "re-hash every cached blob and manifest; exit 1 if any did not match",
         description="Re-hash every cached blob and manifest in the running proxy, which keeps serving. Content "
                     "that does not match its digest is moved to <data_dir>/cache/quarantine and fetched again on "
                     "the next request. Prints the counts; exits 1 if anything did not match.")


def _verify(client: AdminClient, args: argparse.Namespace) -> None:
    run = client.start_cache_verify()
    while run.get("state") == "running":
        time.sleep(POLL)
        run = client.cache_verify()
    if args.json:
        print_json(run)
    else:
        _print_run(run)
    if run.get("state") != "done":
        raise AdminError(f"the verify run did not finish: {text(run.get('error') or run.get('state'))} "
                         "(see the proxy's log)")
    mismatched = run.get("mismatched")
    if isinstance(mismatched, int) and mismatched:
        sys.stdout.flush()
        raise AdminError(f"{mismatched} cached object{'s' if mismatched != 1 else ''} did not match "
                         f"{'their digests' if mismatched != 1 else 'its digest'}: moved to <data_dir>/cache/quarantine, "
                         "and fetched again on the next request")


def _print_run(run: dict[str, Any]) -> None:
    size = run.get("bytes")
    seconds = run.get("duration_seconds")
    pairs = [("state", text(run.get("state"))), *((key, text(run.get(key))) for key in _COUNTS),
             ("bytes", f"{size} ({human_bytes(size)})" if isinstance(size, int) else text(size)),
             ("duration", f"{seconds:.2f} s" if isinstance(seconds, (int, float)) else text(seconds)),
             ("started", text(run.get("started"))), ("finished", text(run.get("finished")))]
    print_fields(pairs)
