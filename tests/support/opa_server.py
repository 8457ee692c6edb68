"""A stand-in OPA server for tests: OPA's REST Data API on loopback, deciding
with regorus on a signed bundle *tarball*, loaded and verified the way OPA does.

* ``GET /health`` -> 200 ``{}`` once a bundle is active;
* ``POST /v1/data/{path}`` with ``{"input": ...}`` -> ``{"result": ...}`` (no
  ``result`` when the document is undefined); with ``?provenance=true`` also
  ``{"provenance": {"bundles": {<name>: {"revision": ...}}}}``;
* ``GET /v1/data/system/bundles`` -> every active bundle's manifest.

Loading a bundle checks what OPA checks before activating it: exactly one JWT
in ``.signatures.json``, verified (ES256) with the configured public key; every
file listed with a matching SHA-256 (JSON files hashed over their value with
sorted keys, Rego files over their bytes) and no listed file missing; every
module's package and every data file under a manifest root, no two roots
overlapping. A bundle that fails is not activated; the previous one stays.

The server runs on its own thread, which creates and alone uses the regorus
engine (a regorus engine must stay on the thread that created it); requests are
served one at a time on that thread, and a new bundle offered with
``offer_bundle`` is activated there before the next request.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import regorus

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.M)
_STRUCTURED = ("data.json", ".manifest")


class BundleRejected(Exception):
    pass


@dataclass
class ActiveBundle:
    name: str
    manifest: dict[str, Any]
    engine: Any  # regorus.Engine, used on the server thread only

    @property
    def revision(self) -> str:
        return str(self.manifest.get("revision", ""))


def _members(tarball: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball)), mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[member.name.lstrip("/")] = extracted.read()
    return files


def _digest(name: str, content: bytes) -> str:
    if name.rsplit("/", 1)[-1] in _STRUCTURED:
        value = json.loads(content)
        content = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    return hashlib.sha256(content).hexdigest()


def _within(roots: list[str], path: str) -> bool:
    return any(r == "" or path == r or path.startswith(r + "/") for r in roots)


def verify_and_read(
    tarball: bytes, public_pem: str, keyid: str | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(manifest, data document, modules) of a signed bundle, or BundleRejected."""
    files = _members(tarball)
    try:
        signatures = json.loads(files.pop(".signatures.json"))["signatures"]
    except (KeyError, ValueError) as exc:
        raise BundleRejected("no .signatures.json") from exc
    if len(signatures) != 1:
        raise BundleRejected(".signatures.json: expected exactly one JWT")
    try:
        claims = jwt.decode(signatures[0], public_pem, algorithms=["ES256"])
    except jwt.PyJWTError as exc:
        raise BundleRejected(f"signature: {exc}") from exc
    # As OPA: the configured key id names the key; else the payload's "keyid".
    if (keyid or claims.get("keyid")) is None:
        raise BundleRejected("verification key ID is empty")
    if claims.get("scope", "") != "":
        raise BundleRejected("scope mismatch")
    listed = {f["name"]: f for f in claims["files"]}
    for name, content in files.items():
        entry = listed.pop(name, None)
        if entry is None:
            raise BundleRejected(f"file {name} not included in bundle signature")
        if entry["algorithm"] != "SHA-256" or entry["hash"] != _digest(name, content):
            raise BundleRejected(f"{name}: digest mismatch")
    if listed:
        raise BundleRejected(
            f"file(s) {sorted(listed)} specified in bundle signatures but not found"
        )
    manifest = json.loads(files.get(".manifest", b"{}"))
    roots = [r.strip("/") for r in manifest.get("roots", [""])]
    for i, one in enumerate(roots):
        for other in roots[i + 1 :]:
            if _within([one], other) or _within([other], one):
                raise BundleRejected(f"manifest has overlapped roots: {one} and {other}")
    data: dict[str, Any] = {}
    modules: dict[str, str] = {}
    for name, content in sorted(files.items()):
        if name.endswith(".rego"):
            source = content.decode("utf-8")
            m = _PACKAGE.search(source)
            package = m.group(1).replace(".", "/") if m else ""
            if not _within(roots, package):
                raise BundleRejected(f"manifest roots do not permit package {package} in {name}")
            modules[name] = source
        elif name.rsplit("/", 1)[-1] == "data.json":
            path = name.rsplit("/", 1)[0] if "/" in name else ""
            if not _within(roots, path):
                raise BundleRejected(f"manifest roots do not permit data at /{path}")
            node = data
            keys = path.split("/") if path else []
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            value = json.loads(content)
            if keys:
                node[keys[-1]] = value
            else:
                data.update(value)
    return manifest, data, modules


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.server.owner.activate_offered()
        url = urlsplit(self.path)
        active = self.server.owner.active
        if url.path == "/health":
            self._send(200 if active else 500, {})
        elif url.path == "/v1/data/system/bundles":
            bundles = {active.name: {"manifest": active.manifest}} if active else {}
            self._send(200, {"result": bundles})
        else:
            self._send(404, {"code": "resource_not_found", "message": "not found"})

    def do_POST(self) -> None:
        self.server.owner.activate_offered()
        url = urlsplit(self.path)
        if not url.path.startswith("/v1/data/"):
            self._send(404, {"code": "resource_not_found", "message": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        active = self.server.owner.active
        answer: dict[str, Any] = {}
        if active is not None:
            rule = "data." + url.path.removeprefix("/v1/data/").strip("/").replace("/", ".")
            try:
                active.engine.set_input_json(json.dumps(body.get("input")))
                result = active.engine.eval_rule(rule)
            except RuntimeError as exc:
                self._send(500, {"code": "internal_error", "message": str(exc)})
                return
            if result is not None:
                answer["result"] = result
        if parse_qs(url.query).get("provenance", [""])[0].lower() == "true":
            bundles = {active.name: {"revision": active.revision}} if active else {}
            answer["provenance"] = {"version": "stand-in", "bundles": bundles}
        self._send(200, answer)


class _Server(HTTPServer):
    owner: OpaStandIn


class OpaStandIn:
    """Serves OPA's Data API for the bundle tarballs it is given (see module doc)."""

    def __init__(
        self, tarball: bytes, *, public_pem: str, keyid: str | None = None, name: str = "broker"
    ) -> None:
        self._public_pem = public_pem
        self._keyid = keyid
        self._name = name
        self._offered: bytes | None = tarball
        self._lock = threading.Lock()
        self.active: ActiveBundle | None = None
        self.rejected: list[str] = []
        self._ready = threading.Event()
        self._server: _Server | None = None
        self._thread = threading.Thread(target=self._run, name="opa-stand-in", daemon=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def offer_bundle(self, tarball: bytes) -> None:
        """A new bundle from the bundle source; activated before the next request."""
        with self._lock:
            self._offered = tarball

    def activate_offered(self) -> None:
        with self._lock:
            tarball, self._offered = self._offered, None
        if tarball is None:
            return
        try:
            manifest, data, modules = verify_and_read(tarball, self._public_pem, self._keyid)
            engine = regorus.Engine()
            engine.add_data_json(json.dumps(data))
            for name, source in modules.items():
                engine.add_policy(name, source)
        except Exception as exc:  # OPA keeps the active bundle on any fault
            self.rejected.append(str(exc))
            return
        self.active = ActiveBundle(self._name, manifest, engine)

    def _run(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.activate_offered()
        self._ready.set()
        self._server.serve_forever(poll_interval=0.05)
        self._server.server_close()
        self.active = None  # the engine is dropped on the thread that created it

    def start(self) -> OpaStandIn:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the OPA stand-in did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self._thread.join(5)

    def __enter__(self) -> OpaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
