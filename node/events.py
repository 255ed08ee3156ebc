"""Convenings as events: Event entries, members' RSVPs and signed attendance counts
(docs/protocol.md §10.1–10.3).
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
