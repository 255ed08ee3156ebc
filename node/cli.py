"""The `convene` command line (placeholder until the node lands: it says so and fails)."""

from __future__ import annotations

import sys


def main() -> None:
    print("convene: the node is not built yet; see the open issues", file=sys.stderr)
    sys.exit(2)
