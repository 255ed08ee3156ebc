"""Where the node hands its routes and services to federation/ (wired by federation work)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the federation routes and background workers to the node's app."""
    del app
