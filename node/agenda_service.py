"""The bottom-up agenda on a node: config, submissions, sponsorships and the computed agenda
(docs/protocol.md §10.4).
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
