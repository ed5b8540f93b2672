"""Minted credentials (ECR, GCR): renewed before they expire, shared, and kept through failures.

Policy, per credential:
- renew when less than a quarter of the lifetime is left (or at a set margin),
  each process at a random moment in the first half of that window, so that
  replicas which minted together (a rollout) do not all renew together;
- a pull that finds it due keeps using it while one mint runs behind it;
  pulls that find no valid token share one mint and wait for it;
- a failed renewal keeps the current token until it really expires, and is
  retried with capped exponential backoff;
- a token without a usable expiry is used, but re-minted after a minute;
- ``renew()`` after an upstream 401 re-mints at once, at most once a minute.
A background loop renews due credentials even when nobody pulls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.credentials.providers import Minted, Minter, MintError
from proxy.singleflight import SingleFlight

__all__ = ["MintState", "MintedCredentials"]

log = logging.getLogger(__name__)

UNTRUSTED_LIFETIME = 60.0
MAX_BACKOFF = 300.0


@dataclass
class MintState:
    registry: str
    minter: Minter
    margin: float | None = None
    minted: Minted | None = None
    minted_at: float | None = None
    refresh_at: float | None = None
    last_attempt: float | None = None
    last_result: str = "never minted"
    failures: int = 0
    failures_total: int = 0
    mints: int = 0

    def valid(self, now: float) -> bool:
        if self.minted is None:
            return False
        expires = self.minted.expires_at
        return expires is None or expires > now or (self.refresh_at is not None and self.refresh_at > now)

    def plan(self, now: float, spread: float = 0.0) -> None:
        """When to renew; ``spread`` (0 to 1) moves it later within the first half of the margin."""
        assert self.minted is not None
        expires = self.minted.expires_at
        if expires is None or expires <= now:
            self.refresh_at = now + UNTRUSTED_LIFETIME
            return
        lifetime = expires - now
        # A margin longer than the token lives (2 h for a 1 h GCR token)
        # would renew at once, forever: it is capped at half the lifetime.
        margin = lifetime / 4 if self.margin is None else min(self.margin, lifetime / 2)
        self.refresh_at = expires - margin * (1 - spread / 2)


class MintedCredentials:
    def __init__(self, *, clock: Callable[[], float] = time.time, spread: Callable[[], float] = random.random) -> None:
        self._clock = clock
        self._spread = spread
        self._states: dict[str, MintState] = {}
        self._flights: SingleFlight[str, Minted] = SingleFlight()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def states(self) -> dict[str, MintState]:
        return self._states

    def configure(self, entries: dict[str, tuple[str, Minter, float | None]]) -> None:
        """Keep state for unchanged credentials; drop the ones that went away."""
        states = {}
        for key, (registry, minter, margin) in entries.items():
            state = self._states.get(key)
            if state is None or state.minter != minter or state.margin != margin:
                state = MintState(registry, minter, margin)
            states[key] = state
        self._states = states

    async def get(self, key: str) -> Minted:
        state = self._states[key]
        now = self._clock()
        if state.minted is not None and state.valid(now):
            due = state.refresh_at is None or now >= state.refresh_at
            if due and self._may_try(state, now):
                # Renew behind the pull: nobody waits for a mint while the
                # current token still works.
                task = asyncio.ensure_future(self._mint_quietly(key, state))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return state.minted
        if not self._may_try(state, now):
            # Within the backoff after a failure: fail fast rather than make
            # every pull wait on the cloud API's timeouts again.
            raise MintError(state.last_result.removeprefix("failed: "))
        return await self._mint(key, state)

    async def renew(self, key: str) -> Minted | None:
        """After the upstream refused a token we believed valid: one fresh mint, rate limited."""
        state = self._states.get(key)
        if state is None:
            return None
        now = self._clock()
        if state.last_attempt is not None and now - state.last_attempt < UNTRUSTED_LIFETIME:
            return None
        return await self._mint(key, state)

    async def aclose(self) -> None:
        """Stop renewals in flight and wait for them; a mint already in its thread finishes there."""
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._flights.aclose()

    async def run(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            for key, state in list(self._states.items()):
                due = state.refresh_at is None or now >= state.refresh_at
                if due and self._may_try(state, now):
                    await self._mint_quietly(key, state)

    async def _mint_quietly(self, key: str, state: MintState) -> None:
        try:
            await self._mint(key, state)
        except MintError:
            # Recorded in the state; pulls keep the current token while it lasts.
            return
        except Exception:
            # Never let one provider's surprise stop renewals for everyone.
            log.exception("renewing credentials for %s failed unexpectedly", state.registry)

    def _may_try(self, state: MintState, now: float) -> bool:
        if state.failures == 0 or state.last_attempt is None:
            return True
        return now - state.last_attempt >= min(2.0 ** state.failures, MAX_BACKOFF)

    async def _mint(self, key: str, state: MintState) -> Minted:
        try:
            return await self._flights.do(key, lambda: self._mint_once(state))
        except MintError:
            if state.valid(self._clock()):
                return state.minted  # type: ignore[return-value]
            raise

    async def _mint_once(self, state: MintState) -> Minted:
        state.last_attempt = self._clock()
        try:
            minted = await asyncio.to_thread(state.minter.mint)
        except Exception as exc:
            if not isinstance(exc, MintError):
                log.exception("minting credentials for %s raised", state.registry)
                exc = MintError(f"unexpected {type(exc).__name__}")
            state.failures += 1
            state.failures_total += 1
            state.last_result = f"failed: {exc}"
            log.warning("minting credentials for %s failed (%d in a row): %s", state.registry, state.failures, exc)
            raise exc from None
        now = self._clock()
        state.minted, state.minted_at, state.failures, state.last_result = minted, now, 0, "ok"
        state.mints += 1
        state.plan(now, self._spread())
        log.info("minted credentials for %s, valid until %s", state.registry,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minted.expires_at)) if minted.expires_at else "unknown")
        return minted
