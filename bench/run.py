"""Benchmark this proxy against distribution, side by side on 127.0.0.1.

    python bench/run.py [--quick] [--rounds 3] [--before DIR] [--uvloop] [--s3] [--json PATH]

Targets: direct (distribution serving the images), peer (distribution in
proxy mode in front of direct), us (this proxy in front of direct), and
optionally before (this proxy from the checkout DIR), us-uvloop (this
proxy on uvloop's event loop), and us-s3 and us-s3-tier (this proxy on S3
storage, without and with its local disk tier). Phases: start-up and idle RSS, cold blob, warm blob
and Range, manifests by tag under wrk, a herd of concurrent cold GETs of one
blob, and a wider herd of a smaller blob. Prints medians and ratios and writes
every raw value to JSON; `python bench/report.py PATH` renders it for docs.
Only ratios compare across machines. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.images import build_image, push  # noqa: E402
from tests.e2e.upstream import Upstream  # noqa: E402

from bench import phases  # noqa: E402
from bench.phases import MEASURES, Blob, Results  # noqa: E402
from bench.shared_backends import s3_specs  # noqa: E402
from bench.table import to_text  # noqa: E402
from bench.targets import Target, TargetSpec, proxy_module_file, start_direct  # noqa: E402

_QUICK = {"rounds": 1, "blob_mib": 20, "wide_mib": 5, "seconds": 3}
_FULL = {"rounds": 3, "blob_mib": 200, "wide_mib": 50, "seconds": 8}


def main() -> None:
    args = _parse_args()
    specs = [TargetSpec("peer", "peer"), TargetSpec("us", "proxy")]
    if args.before is not None:
        specs.append(TargetSpec("before", "proxy", source_dir=args.before))
    if args.uvloop:
        specs.append(TargetSpec("us-uvloop", "proxy", uvloop=True))
    # Before any target starts: the commit is the code the targets run, not whatever is checked out later.
    machine = _machine(args)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="registry-proxy-bench-") as tmp, contextlib.ExitStack() as servers:
        base = Path(tmp)
        if args.s3:
            specs += servers.enter_context(s3_specs(base / "shared"))
        names = ["direct", *(spec.name for spec in specs)]
        direct = start_direct(base / "direct")
        try:
            blobs = _push_blobs(direct, base, names, args)
            _run_phases(args, specs, direct, base, blobs, results)
        finally:
            direct.stop()
    doc = _document(args, machine, names, results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(to_text(doc))
    print(f"\nraw values: {args.json}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small and fast: 20 MiB blobs, 5 MiB wide herd, 1 round, 3 s wrk")
    parser.add_argument("--rounds", type=int, help="rounds per phase (default 3)")
    parser.add_argument("--blob-mib", type=int, help="cold, warm and herd blob size (default 200)")
    parser.add_argument("--wide-mib", type=int, help="wide herd blob size (default 50, about 52 MB)")
    parser.add_argument("--seconds", type=int, help="wrk duration per run (default 8)")
    parser.add_argument("--herd", type=int, default=50, help="concurrent GETs in the herd (default 50)")
    parser.add_argument("--wide", type=int, default=100, help="concurrent GETs in the wide herd (default 100)")
    parser.add_argument("--before", type=Path, help="also run the proxy from this checkout (a git worktree)")
    parser.add_argument("--uvloop", action="store_true", help="also run the proxy on uvloop's event loop")
    parser.add_argument("--s3", action="store_true", help="also run the proxy on S3 storage and PostgreSQL state "
                                                          "(moto's S3 server, Debian's PostgreSQL)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    for key, value in (_QUICK if args.quick else _FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.before is not None:
        args.before = args.before.resolve()
        where = Path(proxy_module_file(args.before)).resolve()
        if not where.is_relative_to(args.before):
            parser.error(f"--before {args.before}: `python -m proxy` there imports {where}")
    return args


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _push_blobs(direct: Upstream, base: Path, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One image per blob, so every round and target gets a blob nobody fetched before."""
    proxies = names[1:]
    plan: dict[str, list[tuple[tuple[int, str], int]]] = {
        "cold": [((r, n), args.blob_mib << 20) for r in range(args.rounds) for n in names],
        "herd": [((r, n), args.blob_mib << 20) for r in range(args.rounds) for n in proxies],
        "wide": [((r, n), args.wide_mib << 20) for r in range(args.rounds) for n in proxies],
    }
    total = sum(len(v) for v in plan.values())
    _log(f"pushing {total} images to direct ({direct.url}) ...")
    blobs: dict[str, Any] = {"manifest": _push_one(direct, base, "manifest", 4096)}
    for kind, entries in plan.items():
        blobs[kind] = {key: _push_one(direct, base, f"{kind}-{key[0]}-{key[1]}", size) for key, size in entries}
    # Gigabytes were just written: the disk must not still be writing them back while cold pulls write theirs.
    _log("flushing the pushed images to disk ...")
    os.sync()
    return blobs


def _push_one(direct: Upstream, base: Path, tag: str, layer_size: int) -> Blob:
    layout = base / "layout"
    layout.mkdir(exist_ok=True)
    image = build_image(layout, tag, layer_sizes=[layer_size], uncompressed=True)
    push(direct, layout, tag, phases.REPO)
    shutil.rmtree(layout)  # the layer now lives in direct's storage; no need to hold it twice
    digest, size = image.layers[0]
    return Blob(tag, digest, size)


def _run_phases(args: argparse.Namespace, specs: list[TargetSpec], direct: Upstream, base: Path,
                blobs: dict[str, Any], results: Results) -> None:
    _log("phase 1: start-up and idle RSS")
    phases.startup(specs, direct, base / "startup", args.rounds, results, _log)
    started = phases.start_all(specs, direct, base / "targets")
    try:
        assert direct.pid is not None
        reference = Target("direct", direct.url, "", direct.pid, lambda: None)
        everyone = [reference, *(s.target for s in started)]
        proxies = [s.target for s in started]
        _log("phase 2: cold blob")
        phases.cold_blob(everyone, blobs["cold"], direct, args.rounds, results, _log)
        _log("phase 3: warm blob and warm Range")
        phases.warm_blob(everyone, blobs["cold"], args.rounds, results, _log)
        _log("phase 4: manifest by tag (wrk)")
        phases.manifests(everyone, blobs["manifest"].tag, args.rounds, args.seconds, results, _log)
        _log(f"phase 5: herd of {args.herd}")
        phases.herds("herd", proxies, blobs["herd"], args.herd, direct, args.rounds, results, _log)
        _log(f"phase 6: wide herd of {args.wide}")
        phases.herds("wide", proxies, blobs["wide"], args.wide, direct, args.rounds, results, _log)
    finally:
        for one in started:
            one.target.stop()


def _document(args: argparse.Namespace, machine: dict[str, Any], names: list[str], results: Results) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "targets": names,
        "measures": [asdict(m) for m in MEASURES],
        "values": results.values,
    }


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().split()
    distribution = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True, check=False)
    info = {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "distribution": distribution.stdout.strip(),
        "wrk": shutil.which("wrk"),
        "commit": _commit(REPO_ROOT),
    }
    if args.before is not None:
        info["before_commit"] = _commit(args.before)
    return info


def _commit(checkout: Path) -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *argv], capture_output=True, text=True, check=True).stdout

    head = git("rev-parse", "HEAD").strip()
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


if __name__ == "__main__":
    main()
