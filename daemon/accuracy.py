"""How often each vendor is right, per field, measured against the values a person or an ERP
finalised (``docrelay report accuracy``, the status page's ``/accuracy``).

The judgement of every vendor answer is SQL (the ``docrelay_field_judgements`` view, whose
docstring in ``daemon.store.views`` defines the truth); this module only filters it by when the
truth was established (``since``), counts it per vendor profile and field, bands the
confidences, and renders the table or CSV.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import IO, Any

from sqlalchemy import Engine, bindparam, text

from daemon.store.models import UTCDateTime

VERDICTS = ("right", "wrong", "missed")
CONFIDENCE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<0.5", 0.0, 0.5),
    ("0.5-0.8", 0.5, 0.8),
    ("0.8-0.95", 0.8, 0.95),
    (">=0.95", 0.95, float("inf")),
)
"""Label, lower bound (inclusive), upper bound (exclusive) of each calibration band."""

_JUDGEMENTS = "SELECT profile, field, verdict, confidence FROM docrelay_field_judgements"
_SINCE = text(f"{_JUDGEMENTS} WHERE truth_at >= :since").bindparams(
    bindparam("since", type_=UTCDateTime())
)


@dataclass
class FieldAccuracy:
    """One vendor profile's answers for one field, counted by verdict."""

    profile: str
    field: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    confidences: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def documents(self) -> int:
        return sum(self.counts.values())

    def share(self, verdict: str) -> float:
        return self.counts[verdict] / self.documents if self.documents else 0.0

    def mean_confidence(self, verdict: str) -> float | None:
        values = self.confidences[verdict]
        return sum(values) / len(values) if values else None


@dataclass
class Calibration:
    """One vendor profile's answers (right or wrong: a miss has no confidence) per band."""

    profile: str
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_band_labels(), 0))
    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_band_labels(), 0))

    def share_right(self, band: str) -> float | None:
        return self.right[band] / self.answered[band] if self.answered[band] else None


@dataclass
class AccuracyReport:
    fields: list[FieldAccuracy]
    calibration: list[Calibration]
    since: date | None = None

    @property
    def empty(self) -> bool:
        return not self.fields


def _band_labels() -> list[str]:
    return [label for label, _low, _high in CONFIDENCE_BANDS]


def band_of(confidence: float) -> str:
    for label, low, high in CONFIDENCE_BANDS:
        if low <= confidence < high:
            return label
    return CONFIDENCE_BANDS[0][0]


def accuracy(engine: Engine, since: date | None = None) -> AccuracyReport:
    """The report over every document whose truth was established on or after ``since``
    (UTC midnight): the time of the last correction or ``posted`` outcome."""
    start = datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None
    with engine.connect() as conn:
        if start is None:
            rows = conn.execute(text(_JUDGEMENTS)).all()
        else:
            rows = conn.execute(_SINCE, {"since": start}).all()
    return summarise(rows, since)


def summarise(rows: Iterable[Any], since: date | None = None) -> AccuracyReport:
    """Count judgement rows (profile, field, verdict, confidence) per profile and field."""
    per_field: dict[tuple[str, str], FieldAccuracy] = {}
    per_profile: dict[str, Calibration] = {}
    for row in rows:
        item = per_field.setdefault((row.profile, row.field), FieldAccuracy(row.profile, row.field))
        item.counts[row.verdict] += 1
        if row.confidence is None:
            continue
        item.confidences[row.verdict].append(float(row.confidence))
        if row.verdict != "missed":
            cal = per_profile.setdefault(row.profile, Calibration(row.profile))
            band = band_of(float(row.confidence))
            cal.answered[band] += 1
            cal.right[band] += row.verdict == "right"
    return AccuracyReport(
        fields=[per_field[key] for key in sorted(per_field)],
        calibration=[per_profile[key] for key in sorted(per_profile)],
        since=since,
    )


def nothing_yet(report: AccuracyReport) -> str:
    when = f" since {report.since.isoformat()}" if report.since else ""
    return (
        f"no document has a truth yet{when}: accuracy is measured once a document is "
        "corrected (docrelay correct, the API, the docrelay_corrections table) or posted in "
        "an ERP"
    )


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def _confidence(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


TABLE_COLUMNS = ("vendor", "field", "n", "right", "wrong", "missed", "conf right", "conf wrong")


def table_lines(report: AccuracyReport) -> list[str]:
    """A terminal table per vendor and field, then a calibration line per vendor."""
    rows = [
        (
            item.profile,
            item.field,
            str(item.documents),
            *(_percent(item.share(v)) for v in VERDICTS),
            _confidence(item.mean_confidence("right")),
            _confidence(item.mean_confidence("wrong")),
        )
        for item in report.fields
    ]
    widths = [max(len(r[i]) for r in [TABLE_COLUMNS, *rows]) for i in range(len(TABLE_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line(TABLE_COLUMNS), line(["-" * w for w in widths])]
    lines.extend(line(row) for row in rows)
    lines.append("")
    lines.append("calibration (share right per confidence band, answers in the band):")
    for cal in report.calibration:
        bands = []
        for label in _band_labels():
            share = cal.share_right(label)
            shown = "-" if share is None else _percent(share)
            bands.append(f"{label} {shown} ({cal.answered[label]})")
        lines.append(f"  {cal.profile}: " + ", ".join(bands))
    return lines


CSV_COLUMNS = (
    "profile", "field", "documents", "right_count", "wrong_count", "missed_count",
    "right_share", "wrong_share", "missed_share", "avg_confidence_right", "avg_confidence_wrong",
)  # fmt: skip


def write_csv(report: AccuracyReport, out: IO[str]) -> None:
    """One row per vendor profile and field, the columns of ``docrelay_vendor_accuracy``
    (shares 0-1, four places)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in report.fields:
        right, wrong = item.mean_confidence("right"), item.mean_confidence("wrong")
        writer.writerow(
            [
                item.profile,
                item.field,
                item.documents,
                *(item.counts[v] for v in VERDICTS),
                *(f"{item.share(v):.4f}" for v in VERDICTS),
                "" if right is None else f"{right:.4f}",
                "" if wrong is None else f"{wrong:.4f}",
            ]
        )


CHART_COLOURS = {"right": "#1e7b34", "wrong": "#b42318", "missed": "#9aa5b1"}
"""Bar colours per verdict (the status page's ok / bad / muted)."""
LABEL_WIDTH = 190.0
BAR_WIDTH = 520.0
ROW_HEIGHT = 22.0
GROUP_GAP = 30.0


def chart(report: AccuracyReport) -> dict[str, Any]:
    """Geometry of the stacked horizontal bars (share right / wrong / missed per vendor and
    field) that ``accuracy.html.j2`` draws as SVG: server-side, no script."""
    groups: list[dict[str, Any]] = []
    y = 0.0
    profiles = sorted({item.profile for item in report.fields})
    for profile in profiles:
        y += GROUP_GAP
        heading_y = y - 10
        rows = []
        for item in (i for i in report.fields if i.profile == profile):
            x = LABEL_WIDTH
            segments = []
            for verdict in VERDICTS:
                width = BAR_WIDTH * item.share(verdict)
                segments.append(
                    {"verdict": verdict, "x": round(x, 2), "width": round(width, 2),
                     "colour": CHART_COLOURS[verdict], "count": item.counts[verdict],
                     "share": _percent(item.share(verdict))}
                )  # fmt: skip
                x += width
            rows.append(
                {"field": item.field, "y": y, "documents": item.documents, "segments": segments}
            )
            y += ROW_HEIGHT
        groups.append({"profile": profile, "heading_y": heading_y, "rows": rows})
    return {
        "groups": groups,
        "width": LABEL_WIDTH + BAR_WIDTH + 230,
        "height": y + 10,
        "label_width": LABEL_WIDTH,
        "bar_width": BAR_WIDTH,
        "row_height": ROW_HEIGHT,
        "colours": CHART_COLOURS,
    }
