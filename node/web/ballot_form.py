"""HTML ballot forms → the JSON API's ballot shapes (ARCHITECTURE "JSON API").

Only the shape is translated here; whether the ballot is valid for the proposal
(known options, no repeats, scores 0..5) is decided by protocol/ballots.py when the
proposals service casts it. Fields are named by option *index* (`rank-0`, `score-2`)
because option texts are free text. A ranked ballot is a set of position numbers,
so it can be reordered without JavaScript; the script only renumbers on drag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from node.errors import BadRequest

Form = Mapping[str, Any]


def _getall(form: Form, name: str) -> list[str]:
    getall = getattr(form, "getall", None)
    if getall is not None:
        return [str(v) for v in getall(name, [])]
    value = form.get(name)
    return [] if value is None else [str(value)]


def _one(form: Form, options: Sequence[str]) -> dict[str, Any]:
    choice = form.get("choice")
    if not choice:
        raise BadRequest("choose one option before sending your vote")
    return {"choice": str(choice)}


def _approval(form: Form, options: Sequence[str]) -> dict[str, Any]:
    return {"choices": _getall(form, "choices")}


def _number(form: Form, name: str, label: str, low: int, high: int) -> int | None:
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{label}: {text[:20]!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{label}: {value} is not between {low} and {high}")
    return value


def _ranked(form: Form, options: Sequence[str]) -> dict[str, Any]:
    placed: dict[int, str] = {}
    for i, option in enumerate(options):
        position = _number(form, f"rank-{i}", f"position of {option[:60]!r}", 1, len(options))
        if position is None:
            continue
        if position in placed:
            raise BadRequest(
                f"{placed[position][:60]!r} and {option[:60]!r} both have position {position};"
                " give each option its own number"
            )
        placed[position] = option
    if not placed:
        raise BadRequest("number at least one option (1 = your first choice)")
    return {"ranking": [placed[p] for p in sorted(placed)]}


def _score(form: Form, options: Sequence[str]) -> dict[str, Any]:
    scores: dict[str, int] = {}
    for i, option in enumerate(options):
        value = _number(form, f"score-{i}", f"score of {option[:60]!r}", 0, 5)
        if value is not None:
            scores[option] = value
    if not scores:
        raise BadRequest("give at least one option a score from 0 to 5")
    return {"scores": scores}


_BY_METHOD: dict[str, Callable[[Form, Sequence[str]], dict[str, Any]]] = {
    "consent": _one,
    "choice": _one,
    "approval": _approval,
    "ranked": _ranked,
    "score": _score,
}


def ballot_from_form(method: str, options: Sequence[str], form: Form) -> dict[str, Any]:
    try:
        build = _BY_METHOD[method]
    except KeyError:
        raise BadRequest(f"unknown voting method {method!r:.40}") from None
    return build(form, options)
