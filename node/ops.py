"""Running a node for real: health, metrics, a reverse proxy in front.

Theory of operation.

- `GET /healthz` answers 200 while a fresh read-only connection to the configured file
  can query it and 503 when it cannot (a volume gone, a disk failing: what a container
  runtime or a watchdog acts on); it also
  says how deep the delivery queue is and what the last delivery error was, because a
  node that cannot reach its region is up but not well.
- `GET /metrics` is the Prometheus text exposition format 0.0.4. Counters (requests by
  status, inbox verification failures) live in the app (`METRICS_KEY`) and restart at
  zero with the process, as Prometheus expects of `_total` series; gauges (ballots,
  chain length, proposals, deliveries) are read from SQLite at scrape time, so they
  are true across restarts and across processes sharing the file.
- Behind a proxy the node still names itself by the URL it was created with: ids and
  signatures never depend on request headers. `trust_forwarded` only lets the inbox
  see the Host and scheme the sender signed (draft-cavage signs `host`), when a proxy
  such as nginx passes the upstream's own address in `Host`.
- Backup and restore are node/backup.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from node.config import NodeConfig
from node.errors import BadRequest

_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_INBOX_PATH = "/inbox"


# --- metrics -------------------------------------------------------------------------


@dataclass
class Metrics:
    """Counters since the process started."""

    requests: Counter[int] = field(default_factory=Counter)
    inbox_rejected: Counter[str] = field(default_factory=Counter)


METRICS_KEY = web.AppKey("convene_metrics", Metrics)
_CONFIG = web.AppKey("convene_ops_config", NodeConfig)


# (name, help, label name, label values, SQL giving (label value, number) rows)
_GAUGES: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    # Ballots are never deleted and AUTOINCREMENT ids are not reused: MAX(id) is the count.
    ("convene_ballots", "Ballots stored", "", ("",), "SELECT '', MAX(id) FROM ballots"),
    ("convene_chain_length", "Entries in this node's signature chain", "", ("",),
     "SELECT '', COUNT(*) FROM chain_entries"),
    ("convene_proposals", "Proposals by status", "status",
     ("draft", "open", "closed", "decided"),
     "SELECT status, COUNT(*) FROM proposals GROUP BY status"),
    ("convene_delivery_queue_depth", "Deliveries queued or waiting for a retry", "", ("",),
     "SELECT '', COUNT(*) FROM fed_delivery WHERE state IN ('queued', 'retrying')"),
    ("convene_deliveries", "Deliveries by state", "state",
     ("queued", "retrying", "sent", "dead"),
     "SELECT state, COUNT(*) FROM fed_delivery GROUP BY state"),
    # Every attempt but the one that succeeded failed: these are the retries so far.
    ("convene_delivery_failed_attempts", "Delivery attempts that failed", "", ("",),
     "SELECT '', SUM(attempts) - COUNT(*) FILTER (WHERE state = 'sent') FROM fed_delivery"),
    ("convene_equivocations", "Actor and seq pairs seen with two different entries", "",
     ("",), "SELECT '', COUNT(*) FROM fed_equivocation"),
)  # fmt: skip

Family = tuple[str, str, str, list[tuple[str, int]]]


def _read_gauges(conn: sqlite3.Connection) -> list[Family]:
    families: list[Family] = []
    for name, text, label, values, sql in _GAUGES:
        found = {str(k): int(v or 0) for k, v in conn.execute(sql)}
        samples = [(f'{label}="{v}"' if label else "", found.get(v, 0)) for v in values]
        families.append((name, "gauge", text, samples))
    return families


def render_metrics(metrics: Metrics, gauges: list[Family]) -> str:
    """The Prometheus text exposition format, version 0.0.4."""
    requests = [(f'status="{s}"', n) for s, n in sorted(metrics.requests.items())]
    refused = [(f'code="{c}"', n) for c, n in sorted(metrics.inbox_rejected.items())]
    families: list[Family] = [
        ("convene_http_requests_total", "counter", "HTTP requests answered, by status", requests),
        (
            "convene_verification_failures_total",
            "counter",
            "Inbox deliveries refused (signature, key, proof, replay, size), by error code",
            refused,
        ),
        *gauges,
    ]
    lines: list[str] = []
    for name, kind, text, samples in families:
        lines += [f"# HELP {name} {text}.", f"# TYPE {name} {kind}"]
        lines += [
            f"{name}{{{lab}}} {value}" if lab else f"{name} {value}" for lab, value in samples
        ]
    return "\n".join(lines) + "\n"


# --- health --------------------------------------------------------------------------


def _read_health(conn: sqlite3.Connection) -> dict[str, Any]:
    conn.execute("SELECT 1 FROM node_identity").fetchone()
    depth = conn.execute(
        "SELECT COUNT(*) FROM fed_delivery WHERE state IN ('queued', 'retrying')"
    ).fetchone()[0]
    row = conn.execute(
        "SELECT inbox, last_error, updated_at FROM fed_delivery WHERE last_error IS NOT NULL"
        " ORDER BY updated_at DESC LIMIT 1"
    ).fetchone()
    last = None
    if row is not None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(row[2])))
        last = {"inbox": row[0], "error": row[1], "at": at}
    return {"queue_depth": int(depth), "last_error": last}


async def _on_reader(app: web.Application, job: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run `job` on a short-lived read-only connection in a thread, at most 5 s."""
    path = app[_CONFIG].database_path

    def run() -> Any:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            return job(conn)
        finally:
            conn.close()

    return await asyncio.wait_for(asyncio.to_thread(run), timeout=5.0)


async def healthz(request: web.Request) -> web.Response:
    try:
        delivery = await _on_reader(request.app, _read_health)
    except (sqlite3.Error, OSError, TimeoutError) as exc:
        body = {"status": "unavailable", "database": f"unreachable: {exc}", "delivery": None}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok", "database": "ok", "delivery": delivery})


async def metrics_page(request: web.Request) -> web.Response:
    try:
        gauges = await _on_reader(request.app, _read_gauges)
    except (sqlite3.Error, OSError, TimeoutError) as exc:
        detail = f"database unreachable: {exc}"
        return web.json_response({"error": "unavailable", "detail": detail}, status=503)
    text = render_metrics(request.app[METRICS_KEY], gauges)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


# --- middlewares ---------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.requests[exc.status] += 1
        raise
    except Exception:
        metrics.requests[500] += 1
        raise
    metrics.requests[response.status] += 1
    if request.path == _INBOX_PATH and 400 <= response.status < 500:
        metrics.inbox_rejected[_error_code(response)] += 1
    return response


def _error_code(response: web.StreamResponse) -> str:
    body = getattr(response, "body", None)
    try:
        code = json.loads(bytes(body))["error"] if isinstance(body, bytes) else None
    except (ValueError, KeyError, TypeError):
        code = None
    return code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else "other"


def _last(value: str) -> str:
    # A proxy appends to what the client sent; only the nearest hop (ours) is trusted.
    return value.rsplit(",", 1)[-1].strip()


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With `trust_forwarded`, take scheme and Host from the proxy's X-Forwarded-*."""
    if not request.app[_CONFIG].trust_forwarded:
        return await handler(request)
    proto = request.headers.get("X-Forwarded-Proto")
    host = request.headers.get("X-Forwarded-Host")
    changes: dict[str, Any] = {}
    if proto is not None:
        proto = _last(proto).lower()
        if proto not in ("http", "https"):
            return _bad(f"X-Forwarded-Proto {proto!r} is neither http nor https")
        changes["scheme"] = proto
    if host is not None:
        host = _last(host)
        if not _HOST_RE.match(host):
            return _bad(f"X-Forwarded-Host {host!r} is not a host[:port]")
        headers = CIMultiDict(request.headers)
        headers["Host"] = host
        changes.update(host=host, headers=headers)
    return await handler(request.clone(**changes) if changes else request)


def _bad(detail: str) -> web.Response:
    # Outside the API's error middleware, so answer in its JSON shape here.
    return web.json_response({"error": BadRequest.code, "detail": detail}, status=400)


def setup(app: web.Application, config: NodeConfig) -> None:
    """Register /healthz, /metrics and the two middlewares (outermost first)."""
    app[_CONFIG] = config
    app[METRICS_KEY] = Metrics()
    app.middlewares.insert(0, forwarded)
    app.middlewares.insert(0, count_requests)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
