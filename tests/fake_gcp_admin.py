"""A local stand-in for the few Google admin REST calls `credctl setup gcp` makes.

It keeps state in memory (projects, buckets, objects, IAM policies, pools,
providers), records every request, checks each carries a bearer token, and
answers like the real APIs for the calls used: Resource Manager project get,
Cloud Storage bucket get/insert, bucket IAM get/set, object media get and
multipart upload, public object GET, IAM workload identity pool and provider
get/create/patch (returning finished operations), and service-account
getIamPolicy/setIamPolicy. ``fail`` makes one call answer an error, once.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ACCESS_TOKEN = "fake-admin-access-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # parsed JSON, bytes, or None
    authorization: str | None


@dataclass
class State:
    projects: dict[str, str] = field(default_factory=dict)  # id -> number
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    bucket_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)  # full name -> pool
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sa_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    etag_counter: int = 0


_POOLS = re.compile(r"^/v1/(projects/[^/]+/locations/global/workloadIdentityPools)$")
_POOL = re.compile(r"^/v1/(projects/[^/]+/locations/global/workloadIdentityPools/[^/:]+)$")
_PROVIDERS = re.compile(
    r"^/v1/(projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers)$"
)
_PROVIDER = re.compile(
    r"^/v1/(projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/:]+)$"
)
_SA_POLICY = re.compile(r"^/v1/projects/-/serviceAccounts/([^/:]+):(getIamPolicy|setIamPolicy)$")
_PROJECT = re.compile(r"^/v1/projects/([^/]+)$")
_BUCKETS = "/storage/v1/b"
_BUCKET = re.compile(r"^/storage/v1/b/([^/]+)$")
_BUCKET_IAM = re.compile(r"^/storage/v1/b/([^/]+)/iam$")
_OBJECT = re.compile(r"^/storage/v1/b/([^/]+)/o/([^/]+)$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/([^/]+)/o$")


class FakeGcpAdmin:
    def __init__(self) -> None:
        self.state = State()
        self.requests: list[Recorded] = []
        self._failures: dict[tuple[str, str], tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeGcpAdmin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add_project(self, project_id: str, number: str) -> None:
        self.state.projects[project_id] = number

    def add_service_account(self, email: str) -> None:
        self.state.sa_policies[email] = {"version": 1, "etag": "BwAAAA==", "bindings": []}

    def fail(self, method: str, path_contains: str, status: int, message: str) -> None:
        """The next ``method`` request whose path contains ``path_contains`` fails."""
        self._failures[(method, path_contains)] = (status, message)

    def mutations(self) -> list[Recorded]:
        """Requests that changed something (everything but reads)."""
        reads = {"GET"}
        return [
            r
            for r in self.requests
            if r.method not in reads and not r.path.endswith(":getIamPolicy")
        ]

    # -- request handling -------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                content_type = self.headers.get("Content-Type", "")
                body: Any = raw or None
                if raw and content_type.startswith("application/json"):
                    body = json.loads(raw)
                elif raw and content_type.startswith("application/x-www-form-urlencoded"):
                    body = parse_qs(raw.decode())
                record = Recorded(
                    self.command, parts.path, query, body, self.headers.get("Authorization")
                )
                with fake._lock:
                    fake.requests.append(record)
                    status, payload, headers = fake._dispatch(record, content_type, raw)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", headers.get("Content-Type", "application/json; charset=UTF-8")
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler

    def _dispatch(
        self, req: Recorded, content_type: str, raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        for (method, fragment), (status, message) in list(self._failures.items()):
            if req.method == method and fragment in req.path:
                del self._failures[(method, fragment)]
                return _error(status, message)
        public = self._public_object(req)
        if public is not None:
            return public
        if req.authorization != f"Bearer {ACCESS_TOKEN}":
            return _error(401, "Request is missing required authentication credential.")
        for handler in (self._storage, self._iam, self._projects):
            answer = handler(req, content_type, raw)
            if answer is not None:
                return answer
        return _error(404, f"no fake for {req.method} {req.path}")

    def _public_object(self, req: Recorded) -> tuple[int, Any, dict[str, str]] | None:
        if req.method != "GET" or req.path.startswith(("/storage/", "/upload/", "/v1/")):
            return None
        bucket, _, name = req.path.lstrip("/").partition("/")
        if bucket not in self.state.buckets:
            return None
        public = any(
            b["role"] == "roles/storage.objectViewer" and "allUsers" in b["members"]
            for b in self.state.bucket_policies[bucket].get("bindings", [])
        )
        stored = self.state.objects.get((bucket, unquote(name)))
        if not public or stored is None:
            return _error(403 if not public else 404, "not readable")
        data, metadata = stored
        return 200, data, {"Content-Type": metadata["contentType"]}

    def _projects(self, req: Recorded, *_: Any) -> tuple[int, Any, dict[str, str]] | None:
        match = _PROJECT.match(req.path)
        if not match or req.method != "GET":
            return None
        number = self.state.projects.get(match.group(1))
        if number is None:
            return _error(403, "The caller does not have permission")
        return 200, {"projectId": match.group(1), "projectNumber": number}, {}

    def _etag(self) -> str:
        self.state.etag_counter += 1
        return f"etag-{self.state.etag_counter}"

    def _storage(
        self, req: Recorded, content_type: str, raw: bytes
    ) -> tuple[int, Any, dict[str, str]] | None:
        s = self.state
        if req.path == _BUCKETS and req.method == "POST":
            name = req.body["name"]
            if name in s.buckets:
                return _error(409, "Your previous request to create the named bucket succeeded")
            s.buckets[name] = {"name": name, "project": req.query["project"][0], **req.body}
            s.bucket_policies[name] = {"version": 1, "etag": self._etag(), "bindings": []}
            return 200, s.buckets[name], {}
        if match := _BUCKET.match(req.path):
            bucket = s.buckets.get(match.group(1))
            return (
                (200, bucket, {}) if bucket else _error(404, "The specified bucket does not exist.")
            )
        if match := _BUCKET_IAM.match(req.path):
            name = match.group(1)
            if name not in s.buckets:
                return _error(404, "The specified bucket does not exist.")
            if req.method == "GET":
                return 200, s.bucket_policies[name], {}
            if req.method == "PUT":
                if req.body.get("etag") != s.bucket_policies[name]["etag"]:
                    return _error(412, "Precondition Failed")
                s.bucket_policies[name] = {**req.body, "etag": self._etag()}
                return 200, s.bucket_policies[name], {}
        if (match := _OBJECT.match(req.path)) and req.method == "GET":
            stored = s.objects.get((match.group(1), unquote(match.group(2))))
            if stored is None:
                return _error(404, "No such object")
            if req.query.get("alt") == ["media"]:
                return 200, stored[0], {"Content-Type": stored[1]["contentType"]}
            return 200, stored[1], {}
        if (match := _UPLOAD.match(req.path)) and req.method == "POST":
            bucket = match.group(1)
            if bucket not in s.buckets:
                return _error(404, "The specified bucket does not exist.")
            if req.query.get("uploadType") != ["multipart"]:
                return _error(400, "only multipart uploads are faked")
            metadata, data = _parse_multipart(content_type, raw)
            s.objects[(bucket, metadata["name"])] = (data, metadata)
            return 200, {"bucket": bucket, **metadata, "size": str(len(data))}, {}
        return None

    def _iam(self, req: Recorded, *_: Any) -> tuple[int, Any, dict[str, str]] | None:
        s = self.state
        if (match := _POOLS.match(req.path)) and req.method == "POST":
            name = f"{match.group(1)}/{req.query['workloadIdentityPoolId'][0]}"
            if name in s.pools:
                return _error(409, "Requested entity already exists")
            s.pools[name] = {"name": name, "state": "ACTIVE", **req.body}
            return 200, _done(name, s.pools[name]), {}
        if match := _POOL.match(req.path):
            pool = s.pools.get(match.group(1))
            if req.method == "GET":
                return (200, pool, {}) if pool else _error(404, "Requested entity was not found.")
        if (match := _PROVIDERS.match(req.path)) and req.method == "POST":
            pool_name = match.group(1).rsplit("/providers", 1)[0]
            if pool_name not in s.pools:
                return _error(404, "Requested entity was not found.")
            name = f"{match.group(1)}/{req.query['workloadIdentityPoolProviderId'][0]}"
            if name in s.providers:
                return _error(409, "Requested entity already exists")
            s.providers[name] = {"name": name, "state": "ACTIVE", **req.body}
            return 200, _done(name, s.providers[name]), {}
        if match := _PROVIDER.match(req.path):
            provider = s.providers.get(match.group(1))
            if provider is None:
                return _error(404, "Requested entity was not found.")
            if req.method == "GET":
                return 200, provider, {}
            if req.method == "PATCH":
                for path in req.query["updateMask"][0].split(","):
                    _apply_mask(provider, req.body, path)
                return 200, _done(match.group(1), provider), {}
        if match := _SA_POLICY.match(req.path):
            email = unquote(match.group(1))
            if email not in s.sa_policies:
                return _error(404, f"Service account {email} does not exist.")
            if match.group(2) == "getIamPolicy":
                return 200, s.sa_policies[email], {}
            policy = req.body["policy"]
            if policy.get("etag") != s.sa_policies[email]["etag"]:
                return _error(409, "There were concurrent policy changes.")
            s.sa_policies[email] = {**policy, "etag": self._etag()}
            return 200, s.sa_policies[email], {}
        return None


def _done(name: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"{name}/operations/op-1", "done": True, "response": response}


def _apply_mask(target: dict[str, Any], source: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        source = source.get(key, {})
    target[keys[-1]] = source.get(keys[-1])


def _parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, Any], bytes]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert len(parts) == 2, "multipart upload needs metadata and media parts"
    metadata = json.loads(parts[0].get_payload(decode=True))
    return metadata, parts[1].get_payload(decode=True)


def _error(status: int, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": status, "message": message}}, {}
