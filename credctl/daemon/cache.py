"""The credential cache: in process memory only, keyed by (provider, format).

A hit is a dict lookup and a comparison; each entry carries its response
already rendered, so the transport writes it without building anything.
A miss runs the blocking issue function in a thread; concurrent requests for
one key share that one fetch (single flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from credctl.credential import IssuedCredential
from credctl.errors import CredctlError
from credctl.timestamps import rfc3339

# A request this close to expiry re-fetches.
REFRESH_MARGIN_SECONDS = 300.0

Key = tuple[str, str]
# (provider, format) -> credential; the cache decides when to call it again.
IssueFunction = Callable[[str, str], IssuedCredential]
Renderer = Callable[[str, bytes, str, bool], bytes]


@dataclass
class CacheEntry:
    credential: IssuedCredential = field(repr=False)
    expires_at: float
    refresh_at: float
    # Full HTTP responses, keep-alive and closing, for a hit.
    hit_response: bytes = field(repr=False)
    hit_response_close: bytes = field(repr=False)


class FetchFailed(Exception):
    """The fetch failed and no valid cached credential can stand in."""

    def __init__(self, status: int, public_message: str) -> None:
        super().__init__(public_message)
        self.status = status
        self.public_message = public_message


@dataclass(frozen=True)
class Outcome:
    """What a cache lookup produced: the body and how (hit, miss or stale)."""

    body: bytes = field(repr=False)
    state: str


class CredentialCache:
    def __init__(
        self,
        issue: IssueFunction,
        clock: Callable[[], float],
        render: Renderer,
        log: Callable[[str], None],
    ) -> None:
        self.entries: dict[Key, CacheEntry] = {}
        self._issue = issue
        self._clock = clock
        self._render = render
        self._log = log
        self._inflight: dict[Key, asyncio.Future[CacheEntry]] = {}
        # Bumped by clear(): a fetch begun before a clear answers its waiters, uncached.
        self._generation = 0

    def fresh(self, key: Key) -> CacheEntry | None:
        """The entry for ``key`` if it may be served as a hit now."""
        entry = self.entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry
        return None

    def clear(self) -> None:
        """Forget every entry; fetches in flight (perhaps with old settings) are not kept."""
        self.entries.clear()
        self._inflight.clear()
        self._generation += 1

    async def get(self, key: Key, refresh: bool) -> Outcome:
        """A hit, or a (shared) fetch; a failed fetch falls back to a still-valid entry."""
        if not refresh:
            entry = self.fresh(key)
            if entry is not None:
                return Outcome(entry.credential.body, "hit")
        future = self._inflight.get(key)
        if future is None:
            future = self._start_fetch(key)
        try:
            entry = await asyncio.shield(future)
        except CredctlError as exc:
            return self._fallback(key, exc.http_status, exc.public_message)
        except Exception:
            return self._fallback(key, 500, "internal error")
        return Outcome(entry.credential.body, "miss")

    def _fallback(self, key: Key, status: int, public_message: str) -> Outcome:
        entry = self.entries.get(key)
        if entry is not None and self._clock() < entry.expires_at:
            return Outcome(entry.credential.body, "stale")
        raise FetchFailed(status, public_message)

    def _start_fetch(self, key: Key) -> asyncio.Future[CacheEntry]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CacheEntry] = loop.create_future()
        self._inflight[key] = future
        label = f"{key[0]}:{key[1]}"
        generation = self._generation

        def settle(credential: IssuedCredential | None, error: BaseException | None) -> None:
            if self._inflight.get(key) is future:
                del self._inflight[key]
            if error is None:
                assert credential is not None
                try:
                    entry = self._entry(credential, key[1])
                    if generation == self._generation:
                        self.entries[key] = entry
                except Exception as exc:
                    # Whatever broke, every waiter must get an answer (a 500).
                    self._log(f"storing {label} failed unexpectedly: {type(exc).__name__}")
                    error = exc
                else:
                    future.set_result(entry)
                    self._log(f"fetched {label}, expires {rfc3339(entry.expires_at)}")
                    return
            future.set_exception(error)
            # Waiters may all have gone (clients closed); the error is logged.
            future.exception()

        def work() -> None:
            self._log(f"fetching {label}")
            credential: IssuedCredential | None = None
            error: BaseException | None = None
            try:
                credential = self._issue(key[0], key[1])
            except CredctlError as exc:
                # CredctlError messages are written to be safe to log, and useful.
                self._log(f"fetch {label} failed: {exc}")
                error = exc
            except Exception as exc:
                # A bug, not a cloud answer: its text may quote anything; name the type only.
                self._log(f"fetch {label} failed unexpectedly: {type(exc).__name__}")
                error = exc
            # The loop is gone when the daemon stopped while this fetch ran.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, credential, error)

        # A daemon thread: a fetch stuck in a prompt must not hold up exit.
        threading.Thread(target=work, name=f"fetch-{label}", daemon=True).start()
        return future

    def _entry(self, credential: IssuedCredential, fmt: str) -> CacheEntry:
        expires_at = credential.expires_at.timestamp()
        return CacheEntry(
            credential=credential,
            expires_at=expires_at,
            refresh_at=expires_at - REFRESH_MARGIN_SECONDS,
            hit_response=self._render(fmt, credential.body, "hit", True),
            hit_response_close=self._render(fmt, credential.body, "hit", False),
        )
