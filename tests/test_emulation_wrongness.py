"""Emulators wrong on purpose (``connectors.emulation.wrongness``): the verdict's rates and
determinism, the wrong values the engine makes, the command line and the control route.

The conformance suite (``tests/conformance/test_vendors.py``) checks every vendor's emulator
against ``verdict`` through the vendor's own client and mapping.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from datetime import date
from decimal import Decimal

import httpx
import pytest

from connectors import registry
from connectors.base import AMOUNT_FIELDS, DATE_FIELDS
from connectors.emulation import extraction as engine
from connectors.emulation import runner, wrongness
from connectors.emulation.options import CommonOptions
from connectors.emulation.wrongness import WrongnessSettings, confidence, verdict
from connectors.normalize import normalize_field, validate_iban
from tests.invoices import random_spec, render_pdf
from tests.servers import serve

HASHES = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(2000)]


def shares(settings: WrongnessSettings, field: str) -> dict[str, float]:
    counts = Counter(verdict(settings, h, field) for h in HASHES)
    return {kind: counts[kind] / len(HASHES) for kind in ("right", "wrong", "missed")}


def test_verdict_draws_the_configured_rates():
    settings = WrongnessSettings(wrong_rate=0.2, miss_rate=0.1, wrong_seed=3)
    for field in ("total_amount", "invoice_number", "supplier_iban"):
        got = shares(settings, field)
        assert abs(got["wrong"] - 0.2) <= 0.03, (field, got)
        assert abs(got["missed"] - 0.1) <= 0.03, (field, got)
    assert shares(WrongnessSettings(), "total_amount")["right"] == 1.0


def test_verdict_is_fixed_by_seed_document_and_field_not_by_order():
    settings = WrongnessSettings(wrong_rate=0.3, miss_rate=0.2, wrong_seed=5)
    first = [verdict(settings, h, "issue_date") for h in HASHES[:300]]
    shuffled = list(range(300))
    random.Random(1).shuffle(shuffled)
    again = {i: verdict(settings, HASHES[i], "issue_date") for i in shuffled}
    assert [again[i] for i in range(300)] == first
    other_seed = WrongnessSettings(wrong_rate=0.3, miss_rate=0.2, wrong_seed=6)
    assert [verdict(other_seed, h, "issue_date") for h in HASHES[:300]] != first
    assert [verdict(settings, h, "due_date") for h in HASHES[:300]] != first


def test_per_field_rates_override_the_global_ones():
    settings = WrongnessSettings(
        wrong_rate=0.2,
        miss_rate=0.1,
        field_wrong_rates={"total_amount": 0.5},
        field_miss_rates={"supplier_iban": 0.0, "total_amount": 0.0},
    )
    total = shares(settings, "total_amount")
    assert abs(total["wrong"] - 0.5) <= 0.03 and total["missed"] == 0
    iban = shares(settings, "supplier_iban")
    assert iban["missed"] == 0 and abs(iban["wrong"] - 0.2) <= 0.03
    other = shares(settings, "invoice_number")
    assert abs(other["wrong"] - 0.2) <= 0.03 and abs(other["missed"] - 0.1) <= 0.03
    always = WrongnessSettings(wrong_rate=0.3, field_miss_rates={"due_date": 1.0})
    assert shares(always, "due_date")["missed"] == 1.0, "its miss rate wins over the wrong rate"


@pytest.mark.parametrize(
    "values",
    [
        {"wrong_rate": 1.5},
        {"miss_rate": -0.1},
        {"wrong_rate": 0.6, "miss_rate": 0.5},
        {"field_wrong_rates": {"total_amount": 0.8}, "field_miss_rates": {"total_amount": 0.3}},
        {"wrong_confidence": (0.9, 0.4)},
        {"field_miss_rates": ["total_amount"]},
    ],
)
def test_impossible_settings_are_refused(values):
    with pytest.raises(ValueError):
        CommonOptions(**values)


def test_wrong_values_get_lower_confidence_on_average():
    settings = WrongnessSettings(wrong_rate=0.5)
    by_kind: dict[str, list[float]] = {"right": [], "wrong": []}
    for h in HASHES:
        kind = verdict(settings, h, "net_amount")
        by_kind[kind].append(confidence(settings, h, "net_amount"))
    assert all(0.8 <= c <= 1.0 for c in by_kind["right"])
    assert all(0.4 <= c <= 0.9 for c in by_kind["wrong"])
    mean = {k: sum(v) / len(v) for k, v in by_kind.items()}
    assert mean["right"] - mean["wrong"] > 0.2, mean


def read(seed: int, settings: WrongnessSettings | None = None) -> engine.Extraction:
    return engine.extract(render_pdf(random_spec(seed)), "application/pdf", wrongness=settings)


def test_wrong_values_are_of_the_same_kind_parse_and_keep_their_box():
    settings = CommonOptions(wrong_rate=1.0, wrong_seed=2)
    for seed in range(12):
        right, wrong = read(seed), read(seed, settings)
        assert set(wrong.fields) == set(right.fields), "every field wrong, none missing"
        assert [i.canonical for i in wrong.line_items] == [i.canonical for i in right.line_items]
        for name, was in right.fields.items():
            now = wrong.fields[name]
            assert now.value != was.value and now.text != was.text, (seed, name)
            assert (now.box, now.page) == (was.box, was.page), (seed, name)
            assert now.confidence is not None and 0.4 <= now.confidence <= 0.9
            again = normalize_field(name, now.text)
            assert now.canonical is not None and now.canonical.raw_text == now.text
            if name in AMOUNT_FIELDS:
                old, new = Decimal(was.value or ""), Decimal(now.value or "")
                assert again.value_number == new and 0 < abs(new - old) <= abs(old) * 8 / 100 + 1
            elif name in DATE_FIELDS:
                old_day, new_day = date.fromisoformat(was.value), date.fromisoformat(now.value)
                assert again.value_date == new_day and 1 <= abs((new_day - old_day).days) <= 21
            elif name == "supplier_iban":
                assert validate_iban(now.text) == now.value and now.value[:2] == was.value[:2]
            else:
                assert again.value_text == now.value, (seed, name, now.text)


def test_extraction_follows_the_verdict_and_rates_of_zero_change_nothing():
    settings = CommonOptions(wrong_rate=0.3, miss_rate=0.3, wrong_seed=9)
    for seed in range(6):
        data = render_pdf(random_spec(seed))
        digest = hashlib.sha256(data).hexdigest()
        right = engine.extract(data, "application/pdf")
        got = engine.extract(data, "application/pdf", wrongness=settings)
        for name, was in right.fields.items():
            expected = verdict(settings, digest, name)
            now = got.fields.get(name)
            seen = "missed" if now is None else "right" if now.value == was.value else "wrong"
            assert seen == expected, (seed, name)
        unchanged = engine.extract(data, "application/pdf", wrongness=CommonOptions())
        assert unchanged == right and all(f.confidence is None for f in unchanged.fields.values())
    everything_missed = read(3, CommonOptions(miss_rate=1.0))
    assert everything_missed.fields == {} and everything_missed.line_items


WRONG_FLAGS = [
    "--wrong-rate", "0.2", "--miss-rate", "0.1", "--wrong-seed", "4",
    "--field-wrong-rate", "total_amount=0.5", "--field-miss-rate", "supplier_iban=0",
    "--field-miss-rate", "due_date=0.3",
]  # fmt: skip


@pytest.mark.parametrize("kind", sorted(registry.available()["emulator"]))
def test_every_emulator_command_takes_the_wrongness_flags(kind):
    command = registry.load("emulator", kind)()
    parser = runner.build_parser(command)
    assert "--wrong-rate" in parser.format_help() and "--field-miss-rate" in parser.format_help()
    common = runner.common_options(parser.parse_args(WRONG_FLAGS))
    assert common["wrong_rate"] == 0.2 and common["miss_rate"] == 0.1
    assert common["wrong_seed"] == 4
    assert common["field_wrong_rates"] == {"total_amount": 0.5}
    assert common["field_miss_rates"] == {"supplier_iban": 0.0, "due_date": 0.3}
    for bad in (["--field-wrong-rate", "totl=0.5"], ["--wrong-rate", "0.7", "--miss-rate", "0.5"]):
        with pytest.raises(SystemExit):
            runner.common_options(parser.parse_args(bad))


def test_a_running_emulator_takes_new_rates_through_the_faults_route():
    from tests.conformance.testkit.emulator import Options, create_app

    app = create_app(Options(delay=0))
    options = app.state.emulator.options
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        changed = http.post(
            "/_emulator/faults",
            json={"wrong_rate": 0.25, "field_miss_rates": {"total_amount": 1}, "wrong_seed": 8},
        )
        assert changed.status_code == 200, changed.text
        shown = changed.json()
        assert shown["wrong_rate"] == 0.25 and shown["field_miss_rates"] == {"total_amount": 1.0}
        assert (options.wrong_rate, options.wrong_seed) == (0.25, 8)
        for junk in ({"wrong_rate": 2}, {"miss_rate": 0.8}, {"right_confidence": [1, 0]}):
            refused = http.post("/_emulator/faults", json=junk)
            assert refused.status_code == 400, junk
        assert (options.wrong_rate, options.miss_rate) == (0.25, 0.0), "nothing changed"
        assert http.get("/_emulator/faults").json()["wrong_seed"] == 8
    assert wrongness.fingerprint(options) != wrongness.fingerprint(CommonOptions())
