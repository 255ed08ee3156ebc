"""Server-rendered charts of a tally: inline SVG and one HTML table, no JavaScript.

Theory of operation. A results page must be readable at a glance on a cheap phone and
by a screen reader, with no chart service and no script. So every chart is a small
inline SVG with `role="img"`, a `<title>` and a `<desc>` that states the numbers in
words, and every bar carries its number as text beside it (colour is never the only
cue: the winner is also marked with a word). Bars are horizontal because option
names are long sentences more often than not.

Which chart a method gets is one table (`_BY_METHOD`): consent, choice and approval
are bars of counts; score is bars of the mean score on a fixed 0..5 axis; ranked is
bars of head-to-head wins plus the pairwise matrix as a table (docs/protocol.md §8.1:
`pairwise[i][j]` ballots prefer option i to option j, options in spec order).
The inputs are protocol's typed counts (`protocol.tally.parse_counts`), so a malformed
tally fails before it gets here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from html import escape

from markupsafe import Markup

from protocol.ballots import CONSENT_CHOICES, MAX_SCORE, parse_fraction
from protocol.tally import ConsentCounts, Counts, OptionCounts, PairwiseCounts, ScoreCounts

# About a phone's width in CSS pixels, so 15-unit text stays ~15 px where space is
# tightest; the stylesheet caps the chart's width so it never grows past ~1.3x.
WIDTH = 360
ROW = 50  # label line above a 20-unit bar
BAR_MAX = WIDTH
LINE_CHARS = 44  # characters of 15-unit text that fit on one line of WIDTH

# Colours with at least 4.5:1 contrast against white (WCAG 1.4.11 asks 3:1 for graphics).
INK = "#1a1a1a"
BAR = "#2b5f9e"
WIN = "#1e6b3a"
BLOCK = "#a61b1b"
QUORUM = "#8a4b00"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # the number as people read it, e.g. "12" or "3.4 of 5"
    colour: str = BAR
    note: str = ""  # a word beside the colour, e.g. "winner"


def _short(label: str, room: int = 24) -> str:
    return label if len(label) <= room else label[: max(1, room - 1)] + "…"


def bar_chart(bars: Sequence[Bar], *, title: str, scale_max: float | None = None) -> Markup:
    """Horizontal bars, each labelled with its name and its number."""
    top = scale_max if scale_max is not None else max((b.value for b in bars), default=0.0)
    height = ROW * len(bars)
    desc = "; ".join(f"{b.label}: {b.text}{' (' + b.note + ')' if b.note else ''}" for b in bars)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}: {escape(desc)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(desc)}</desc>",
    ]
    for i, b in enumerate(bars):
        y = i * ROW
        length = 0.0 if top <= 0 else BAR_MAX * b.value / top
        number = b.text + (f" {b.note}" if b.note else "")
        # Name left, number right on one line; the name gives way (the full name is
        # in the <desc> and the aria-label).
        label = escape(_short(b.label, LINE_CHARS - len(number) - 2))
        weight = ' font-weight="700"' if b.note else ""
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="15" fill="{INK}">{label}</text>'
            f'<text x="{WIDTH}" y="{y + 16}" text-anchor="end" font-size="15" fill="{INK}"'
            f"{weight}>{escape(number)}</text>"
            f'<rect x="0" y="{y + 22}" width="{WIDTH}" height="20" fill="#eeeeee" rx="2"/>'
            f'<rect x="0" y="{y + 22}" width="{length:.1f}" height="20" '
            f'fill="{b.colour}" rx="2"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def turnout_chart(cast: int, eligible: int, quorum: str) -> Markup:
    """One bar of ballots cast out of eligible members, with the quorum line on it."""
    need = parse_fraction(quorum, "quorum")
    share = Fraction(cast, eligible) if eligible > 0 else Fraction(0)
    met = eligible > 0 and cast * need.denominator >= need.numerator * eligible
    bar_w = WIDTH
    fill = min(1.0, float(share)) * bar_w
    mark = float(need) * bar_w
    need_text = f"quorum {_percent(need)}" if need > 0 else "no quorum"
    verdict = "quorum met" if met or need == 0 else "quorum not met"
    words = f"{cast} of {eligible} members voted ({_percent(share)}); {need_text}; {verdict}"
    anchor = "end" if mark > WIDTH / 2 else "start"
    quorum_line = (
        f'<line x1="{mark:.1f}" y1="20" x2="{mark:.1f}" y2="56" stroke="{QUORUM}" '
        f'stroke-width="3" stroke-dasharray="5 3"/>'
        f'<text x="{mark:.1f}" y="74" text-anchor="{anchor}" font-size="15" fill="{QUORUM}">'
        f"{escape(need_text)}</text>"
        if need > 0
        else ""
    )
    return Markup(
        f'<svg class="chart turnout" viewBox="0 0 {WIDTH} 80" width="100%" role="img" '
        f'aria-label="Turnout: {escape(words)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>Turnout</title><desc>{escape(words)}</desc>"
        f'<text x="0" y="15" font-size="15" fill="{INK}">'
        f"{escape(f'{cast} of {eligible} voted ({_percent(share)})')}</text>"
        f'<rect x="0" y="24" width="{bar_w}" height="28" fill="#e6e6e6" rx="3"/>'
        f'<rect x="0" y="24" width="{fill:.1f}" height="28" fill="{WIN if met else BAR}" rx="3"/>'
        f"{quorum_line}"
        "</svg>"
    )


def _percent(f: Fraction) -> str:
    return f"{round(float(f) * 100)}%"


def _winner_note(option: str, marks: Mapping[str, str]) -> tuple[str, str]:
    note = marks.get(option, "")
    return (WIN, note) if note else (BAR, "")


def _consent(options: Sequence[str], c: Counts, marks: Mapping[str, str]) -> Markup:
    assert isinstance(c, ConsentCounts)
    colours = {"agree": WIN, "abstain": BAR, "disagree": BAR, "block": BLOCK}
    bars = [
        Bar(choice, getattr(c, choice), str(getattr(c, choice)), colours[choice])
        for choice in CONSENT_CHOICES
    ]
    return bar_chart(bars, title="Consent: ballots per choice")


def _options(options: Sequence[str], c: Counts, marks: Mapping[str, str]) -> Markup:
    assert isinstance(c, OptionCounts)
    bars = []
    for o in options:
        colour, note = _winner_note(o, marks)
        n = c.votes.get(o, 0)
        bars.append(Bar(o, n, f"{n} vote{'s' if n != 1 else ''}", colour, note))
    return bar_chart(bars, title="Votes per option")


def _score(options: Sequence[str], c: Counts, marks: Mapping[str, str]) -> Markup:
    assert isinstance(c, ScoreCounts)
    bars = []
    for o in options:
        n = c.scored.get(o, 0)
        mean = Fraction(c.sums.get(o, 0), n) if n else None
        colour, note = _winner_note(o, marks)
        text = "not scored" if mean is None else f"{float(mean):.1f} of {MAX_SCORE} ({n} scored)"
        bars.append(Bar(o, float(mean or 0), text, colour, note))
    return bar_chart(bars, title=f"Mean score per option, 0 to {MAX_SCORE}", scale_max=MAX_SCORE)


def _ranked(options: Sequence[str], c: Counts, marks: Mapping[str, str]) -> Markup:
    assert isinstance(c, PairwiseCounts)
    d = c.pairwise
    bars = []
    for i, o in enumerate(options):
        wins = sum(1 for j in range(len(options)) if j != i and d[i][j] > d[j][i])
        colour, note = _winner_note(o, marks)
        bars.append(Bar(o, wins, f"beats {wins} of {len(options) - 1}", colour, note))
    chart = bar_chart(bars, title="Head-to-head wins per option", scale_max=len(options) - 1)
    return chart + pairwise_table(options, c)


def pairwise_table(options: Sequence[str], c: PairwiseCounts) -> Markup:
    """The matrix as a table: row option preferred to column option by N ballots."""
    d = c.pairwise
    head = "".join(f'<th scope="col">{escape(_short(o))}</th>' for o in options)
    rows = []
    for i, o in enumerate(options):
        cells = []
        for j in range(len(options)):
            if i == j:
                cells.append('<td class="self">–</td>')
                continue
            won = d[i][j] > d[j][i]
            cls = ' class="won"' if won else ""
            mark = " ✓" if won else ""
            cells.append(f"<td{cls}>{d[i][j]}{mark}</td>")
        rows.append(f'<tr><th scope="row">{escape(_short(o))}</th>{"".join(cells)}</tr>')
    return Markup(
        '<div class="table-scroll"><table class="pairwise">'
        "<caption>Head to head: how many ballots ranked the row option above the column "
        "option (✓ = row wins that pair)</caption>"
        f"<thead><tr><td></td>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


_Chart = Callable[[Sequence[str], Counts, Mapping[str, str]], Markup]
_BY_METHOD: dict[str, _Chart] = {
    "consent": _consent,
    "choice": _options,
    "approval": _options,
    "score": _score,
    "ranked": _ranked,
}


def tally_chart(
    method: str,
    options: Sequence[str],
    counts: Counts,
    winners: Sequence[str] = (),
    *,
    tie: bool = False,
    word: str = "winner",
) -> Markup:
    """The chart for a tally of `method`; `winners` are marked `word` (or "tied")."""
    word = "tied" if tie else word
    return _BY_METHOD[method](options, counts, dict.fromkeys(winners, word))
