"""The connection limit: the longest wait for a request head makes way; when all are serving, a new one is refused."""

from __future__ import annotations

from typing import Any

from proxy.api.connections import ConnectionPolice


class Handler:
    def __init__(self, police: ConnectionPolice) -> None:
        self.police = police
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        self.police.closed(self)  # type: ignore[arg-type]


def test_the_longest_waiting_connection_makes_way_and_busy_ones_do_not() -> None:
    police = ConnectionPolice(header_timeout=10, max_connections=3)
    a, b, c, d, e = (Handler(police) for _ in range(5))
    fake: Any = police
    for handler in (a, b, c):
        assert fake.opened(handler)
    fake.waiting(b, True)
    fake.waiting(a, True)  # a started waiting after b: b has waited longest
    assert fake.opened(d)
    assert b.evicted and not a.evicted and police.open == 3
    fake.waiting(a, False)  # its head arrived: it is serving a request now
    assert not fake.opened(e)
    assert (police.evicted, police.refused, police.open) == (1, 1, 3)
    fake.closed(c)
    assert fake.opened(e)
