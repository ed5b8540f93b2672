"""SIGKILL during fills and admin writes: after a restart nothing is half-written and nothing acknowledged is lost.

Three trials run always; REGISTRY_PROXY_LONG_TESTS=1 runs 50
(REGISTRY_PROXY_KILL_TRIALS changes the number). Each trial kills the proxy
at a random moment while a blob streams in from a slow upstream and admin
writes go on, restarts it on the same data, and checks every cached file
against its digest, that no temp file is left, that every acknowledged
write is there, and that the blob is served whole afterwards.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading

from .admin import Admin, new_token
from .http import concurrent_gets
from .proxyproc import ProxyFactory, ProxyProcess
from .tools import wait_until

LONG = os.environ.get("REGISTRY_PROXY_LONG_TESTS") == "1"
TRIALS = int(os.environ.get("REGISTRY_PROXY_KILL_TRIALS", "50" if LONG else "3"))


def _bad_cache_files(proxy: ProxyProcess) -> list[str]:
    """Content files whose bytes do not hash to their name."""
    bad = []
    for kind in ("blobs", "manifests"):
        for path in (proxy.data_dir / "cache" / kind).rglob("*"):
            if path.is_file() and hashlib.new(path.parent.parent.name, path.read_bytes()).hexdigest() != path.name:
                bad.append(str(path))
    return bad


def test_sigkill_mid_fill_and_mid_write_leaves_nothing_half_written(make_faulty_upstream: object,
                                                                     make_proxy: ProxyFactory) -> None:
    fake = make_faulty_upstream("slow", layer_size=2 * 1024 * 1024, piece=32 * 1024, delay=0.01)  # type: ignore[operator]
    token = new_token()
    proxy = make_proxy({"registries": [{"address": "fault.example", "endpoint": fake.url}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token})
    admin = Admin(proxy.host, token)
    url = f"{proxy.url}/v2/fault.example/fault/app/blobs/{fake.layer_digest}"
    rng = random.Random(12)
    acknowledged: list[int] = []
    outcomes = {"killed_mid_fill": 0, "fill_done_first": 0}

    for trial in range(TRIALS):
        stop = threading.Event()

        def writes(trial: int = trial, stop: threading.Event = stop) -> None:
            for i in range(1_000):
                if stop.is_set():
                    return
                try:
                    reply = admin.call("POST", "/registries", {"address": f"t{trial}-{i}.example.com",
                                                               "username": "u", "password": f"p{i}"})
                except OSError:
                    return
                if reply.status == 201:
                    acknowledged.append(reply.json()["id"])

        wanted = fake.blob_gets.get(fake.layer_digest, 0) + 1
        fill = threading.Thread(target=concurrent_gets, args=(url, 1))
        writer = threading.Thread(target=writes)
        fill.start()
        writer.start()
        # Somewhere in the fill: after a random share of the blob was sent upstream.
        wait_until(lambda: fake.blob_gets.get(fake.layer_digest, 0) >= wanted,  # noqa: B023
                   what="the fill to start")
        # The moment of the kill is random on purpose; the fill takes longer than the longest wait.
        threading.Event().wait(rng.uniform(0.0, 0.3))
        proxy.kill()
        stop.set()
        writer.join(30)
        fill.join(30)

        proxy.start()
        assert [p.name for p in (proxy.data_dir / "cache" / "tmp").iterdir()] == [], f"trial {trial}: temp left"
        assert _bad_cache_files(proxy) == [], f"trial {trial}"
        cached = list((proxy.data_dir / "cache" / "blobs").rglob(fake.layer_digest.split(":")[1]))
        outcomes["fill_done_first" if cached else "killed_mid_fill"] += 1
        stored = {r["id"] for r in admin.registries()}
        assert set(acknowledged) <= stored, f"trial {trial}: acknowledged writes lost"
        [served] = concurrent_gets(url, 1)
        assert served.status == 200 and served.digest == fake.layer_digest, f"trial {trial}: {served}"
        # Next trial fills again from upstream.
        for path in (proxy.data_dir / "cache" / "blobs").rglob(fake.layer_digest.split(":")[1]):
            path.unlink()
        proxy.restart()

    print(f"\nkill trials: {TRIALS}, {outcomes}, {len(acknowledged)} acknowledged writes all kept")
    assert outcomes["killed_mid_fill"] >= 1
