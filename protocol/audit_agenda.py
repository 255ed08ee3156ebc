"""The audit's agenda check: a qualified item the region closed without a vote
(docs/protocol.md §10.4, docs/auditing.md "Dropped agenda items").

Theory of operation. "No convening host can quietly drop an item": the agenda is a pure
function of signed entries (protocol/agenda.py), so an auditor holding the region's
config and close, the chapters' submissions and sponsorships and the region's
Questions recomputes it exactly as every node does. For each config that a valid
``AgendaClose`` closed, every item whose status comes out ``dropped`` is a finding
against the region, at the close's seq: the region signed that the agenda was over
while an item that qualified by its own signed rule had no vote (items and
sponsorships signed after the close do not count, ``before_close``). Agenda entries that
break §10.4 (misaddressed, from a chapter not listed, a sponsorship of an item never
submitted, a close by another actor) are findings against their author.

Only entries whose chains verified are passed in; an agenda whose config is not in
the bundle cannot be judged and is left alone. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from protocol.agenda import (
    CLOSE_TYPE,
    CONFIG_TYPE,
    SPONSORSHIP_TYPE,
    SUBMISSION_TYPE,
    before_close,
    compute_agenda,
    items_voted,
    parse_close,
    parse_config,
    parse_sponsorship,
    parse_submission,
)
from protocol.audit_report import Finding, finding_of
from protocol.errors import ProtocolError
from protocol.events import source

__all__ = ["DROPPED", "agenda_findings"]

DROPPED = "agenda_item_dropped"
BAD_ENTRY = "bad_agenda_entry"


def agenda_findings(entries: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Findings about every agenda in ``entries`` (chain-verified entries of any type)."""
    findings: list[Finding] = []
    configs: dict[str, Mapping[str, Any]] = {}
    by_config: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    questions: list[Mapping[str, Any]] = []
    for entry in entries:
        kind = entry.get("type")
        if kind == "Question":
            questions.append(entry)
        elif kind == CONFIG_TYPE:
            try:
                configs[source(entry).digest] = entry
                parse_config(entry)
            except ProtocolError as exc:
                findings.append(finding_of(exc, entry, BAD_ENTRY))
        elif kind in (SUBMISSION_TYPE, SPONSORSHIP_TYPE, CLOSE_TYPE):
            named = entry.get("config")
            if isinstance(named, str):
                by_config[named][str(kind)].append(entry)
    for digest, cfg in sorted(configs.items()):
        findings += _check_agenda(cfg, by_config.get(digest, {}), questions)
    return findings


def _check_agenda(
    cfg: Mapping[str, Any],
    held: Mapping[str, list[Mapping[str, Any]]],
    questions: list[Mapping[str, Any]],
) -> list[Finding]:
    findings: list[Finding] = []
    try:
        cfg_src, _ = parse_config(cfg)
    except ProtocolError:
        return findings  # named once already, as a bad config
    subs = _valid(held.get(SUBMISSION_TYPE, []), lambda e: parse_submission(cfg, e), findings)
    items = {source(s).digest for s in subs}
    sps = _valid(held.get(SPONSORSHIP_TYPE, []), lambda e: parse_sponsorship(cfg, e), findings)
    for sp in list(sps):
        if sp.get("item") not in items:
            sps.remove(sp)
            why = f"sponsors item {str(sp.get('item'))[:12]}…, which no submission here is"
            findings.append(Finding(source(sp).actor, source(sp).seq, BAD_ENTRY, why))
    closes = _valid(held.get(CLOSE_TYPE, []), lambda e: parse_close(cfg, e), findings)
    if not closes:
        return findings
    first = min(closes, key=lambda e: source(e).seq)
    close_seq = source(first).seq
    try:
        voted = items_voted(cfg_src.actor, questions)
        subs, sps = before_close(subs, sps, closes)
        agenda = compute_agenda(cfg, subs, sps, voted, closed=True)
    except ProtocolError as exc:
        findings.append(finding_of(exc, cfg, BAD_ENTRY))
        return findings
    for item in agenda.dropped:
        why = (
            f"agenda config {agenda.config} ({cfg.get('convening')!s:.200}): item {item.item} "
            f"{item.title!r:.200}, submitted by {item.chapter} at seq {item.seq}, qualified "
            f"with {len(item.sponsors)} of {agenda.needed} sponsoring chapters and was never "
            "put to a vote, yet the region closed the agenda"
        )
        findings.append(Finding(cfg_src.actor, close_seq, DROPPED, why))
    return findings


def _valid(
    entries: list[Mapping[str, Any]],
    check: Any,
    findings: list[Finding],
) -> list[Mapping[str, Any]]:
    ok = []
    for entry in entries:
        try:
            check(entry)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, BAD_ENTRY))
            continue
        ok.append(entry)
    return ok
