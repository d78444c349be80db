"""``docrelay report cost``: documents and pages sent to each vendor profile per UTC month,
priced by the profile's ``[vendors.<profile>.budget]`` prices.

A submission counts as sent once it was charged (``submissions.charged_at``): its budget was
reserved just before its upload, or, for a profile without limits, the vendor answered the
upload. It counts in the month it was charged, once, whatever retries followed; pages are the
document's page count (1 when unknown), as the budget counts them. Prices are today's
configuration, applied to every month shown.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, func, select

from connectors.base import BudgetSettings
from daemon.pipeline import ledger
from daemon.store.models import Document

NO_PRICE = "no price"


@dataclass(frozen=True, slots=True)
class CostRow:
    """One profile's month."""

    profile: str
    month: str
    """``YYYY-MM`` (UTC)."""
    documents: int
    pages: int
    price_per_document: Decimal | None
    price_per_page: Decimal | None
    currency: str | None
    cost: Decimal | None
    """None: the profile has no price."""


def cost_rows(
    engine: Engine,
    prices: Mapping[str, BudgetSettings],
    *,
    since: date | None = None,
    until: date | None = None,
) -> list[CostRow]:
    """Per profile and month, what was sent between ``since`` and ``until`` (both days
    included), priced by ``prices`` (a profile's budget settings; missing: no price)."""
    sub, docs = ledger.submissions, Document.__table__
    query = (
        select(sub.c.profile, sub.c.charged_at, func.coalesce(docs.c.pages, 1).label("pages"))
        .join(docs, docs.c.id == sub.c.document_id)
        .where(sub.c.charged_at.is_not(None))
    )
    if since is not None:
        query = query.where(sub.c.charged_at >= datetime(since.year, since.month, since.day,
                                                          tzinfo=UTC))  # fmt: skip
    if until is not None:
        end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
        query = query.where(sub.c.charged_at < end)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    with engine.connect() as conn:
        for row in conn.execute(query):
            month = row.charged_at.astimezone(UTC).strftime("%Y-%m")
            count = counts[(row.profile, month)]
            count[0] += 1
            count[1] += max(int(row.pages or 1), 1)
    rows = []
    for (profile, month), (documents, pages) in sorted(counts.items()):
        budget = prices.get(profile)
        if budget is None or not budget.priced:
            rows.append(CostRow(profile, month, documents, pages, None, None, None, None))
            continue
        cost = (budget.price_per_document or Decimal(0)) * documents + (
            budget.price_per_page or Decimal(0)
        ) * pages
        rows.append(
            CostRow(
                profile, month, documents, pages, budget.price_per_document,
                budget.price_per_page, budget.currency, cost,
            )
        )  # fmt: skip
    return rows


def totals(rows: list[CostRow]) -> dict[str, Decimal]:
    """The cost of the priced rows, by currency."""
    found: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.cost is not None and row.currency is not None:
            found[row.currency] += row.cost
    return dict(sorted(found.items()))


def _text(value: Decimal | None) -> str:
    return "" if value is None else str(value)


HEADER = [
    "profile", "month", "documents", "pages", "price_per_document", "price_per_page",
    "currency", "cost",
]  # fmt: skip


def as_csv(rows: list[CostRow]) -> str:
    """One line per profile and month, then a ``total`` line per currency; an empty cost is
    a profile without a price."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for r in rows:
        writer.writerow(
            [r.profile, r.month, r.documents, r.pages, _text(r.price_per_document),
             _text(r.price_per_page), r.currency or "", _text(r.cost)]
        )  # fmt: skip
    for currency, cost in totals(rows).items():
        documents = sum(r.documents for r in rows if r.currency == currency)
        pages = sum(r.pages for r in rows if r.currency == currency)
        writer.writerow(["total", "", documents, pages, "", "", currency, cost])
    return out.getvalue()


def as_table(rows: list[CostRow]) -> str:
    """The report for a person: aligned columns, "no price" where the profile has none."""
    lines = [
        f"{'profile':<20} {'month':<7} {'documents':>9} {'pages':>7} {'per doc':>10} "
        f"{'per page':>10} {'cost':>14}"
    ]
    for r in rows:
        if r.cost is None:
            priced = f"{'':>10} {'':>10} {NO_PRICE:>14}"
        else:
            priced = (
                f"{_text(r.price_per_document):>10} {_text(r.price_per_page):>10} "
                f"{f'{r.cost} {r.currency}':>14}"
            )
        lines.append(f"{r.profile:<20} {r.month:<7} {r.documents:>9} {r.pages:>7} {priced}")
    if not rows:
        lines.append("(nothing sent in this time)")
    for currency, cost in totals(rows).items():
        lines.append(f"{'total':<20} {'':<7} {'':>9} {'':>7} {'':>10} {'':>10} "
                     f"{f'{cost} {currency}':>14}")  # fmt: skip
    return "\n".join(lines) + "\n"
