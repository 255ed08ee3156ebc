"""Partner facilitation: a region grants a facilitator on another node, whose signed requests it
carries out.
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
