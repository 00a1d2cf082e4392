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
from datetime import timezone

from credctl.credential import IssuedCredential
from credctl.errors import CredctlError

# A request this close to expiry re-fetches.
REFRESH_MARGIN_SECONDS = 300.0

Key = tuple[str, str]
IssueFunction = Callable[[str, str, bool], IssuedCredential]
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
    fmt: str


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

    def fresh(self, key: Key) -> CacheEntry | None:
        """The entry for ``key`` if it may be served as a hit now."""
        entry = self.entries.get(key)
        if entry is not None and self._clock() < entry.refresh_at:
            return entry
        return None

    def clear(self) -> None:
        self.entries.clear()

    @property
    def fetching(self) -> int:
        return len(self._inflight)

    async def get(self, key: Key, refresh: bool) -> Outcome:
        """A hit, or a (shared) fetch; a failed fetch falls back to a still-valid entry."""
        if not refresh:
            entry = self.fresh(key)
            if entry is not None:
                return Outcome(entry.credential.body, "hit", key[1])
        future = self._inflight.get(key)
        if future is None:
            future = self._start_fetch(key, refresh)
        try:
            entry = await asyncio.shield(future)
        except CredctlError as exc:
            return self._fallback(key, exc.http_status, exc.public_message)
        except Exception:
            return self._fallback(key, 500, "internal error")
        return Outcome(entry.credential.body, "miss", key[1])

    def _fallback(self, key: Key, status: int, public_message: str) -> Outcome:
        entry = self.entries.get(key)
        if entry is not None and self._clock() < entry.expires_at:
            return Outcome(entry.credential.body, "stale", key[1])
        raise FetchFailed(status, public_message)

    def _start_fetch(self, key: Key, refresh: bool) -> asyncio.Future[CacheEntry]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CacheEntry] = loop.create_future()
        self._inflight[key] = future
        label = f"{key[0]}:{key[1]}"

        def settle(credential: IssuedCredential | None, error: BaseException | None) -> None:
            self._inflight.pop(key, None)
            if error is not None:
                future.set_exception(error)
            else:
                assert credential is not None
                future.set_result(self._store(key, credential))
            # Waiters may all have gone (clients closed); the error is logged.
            future.exception()

        def work() -> None:
            self._log(f"fetching {label}")
            credential: IssuedCredential | None = None
            error: BaseException | None = None
            try:
                credential = self._issue(key[0], key[1], refresh)
            except CredctlError as exc:
                self._log(f"fetch {label} failed: {exc}")
                error = exc
            except Exception as exc:
                # A bug, not a cloud answer: name it; the message carries no secret.
                self._log(f"fetch {label} failed unexpectedly: {type(exc).__name__}: {exc}")
                error = exc
            else:
                expires = credential.expires_at.astimezone(timezone.utc)
                self._log(f"fetched {label}, expires {expires:%Y-%m-%dT%H:%M:%SZ}")
            # The loop is gone when the daemon stopped while this fetch ran.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, credential, error)

        # A daemon thread: a fetch stuck in a prompt must not hold up exit.
        threading.Thread(target=work, name=f"fetch-{label}", daemon=True).start()
        return future

    def _store(self, key: Key, credential: IssuedCredential) -> CacheEntry:
        expires_at = credential.expires_at.timestamp()
        entry = CacheEntry(
            credential=credential,
            expires_at=expires_at,
            refresh_at=expires_at - REFRESH_MARGIN_SECONDS,
            hit_response=self._render(key[1], credential.body, "hit", True),
            hit_response_close=self._render(key[1], credential.body, "hit", False),
        )
        self.entries[key] = entry
        return entry
