"""The official ``konfuzio-sdk`` (PyPI) against the Konfuzio emulator, unchanged.

The SDK is heavy (about 600 MB with pandas, scipy, scikit-learn, bentoml …), so it lives in its
own virtual environment, ``.venv-konfuzio`` (``.ci/run`` creates it when missing), and drives
the emulator from there: ``tests/konfuzio_sdk_flow.py`` does what a user of the SDK does —
``init_env`` for a token, projects, labels, label sets and categories, an upload, the document's
status and annotations, accept/decline/create annotations, rename, list and download the
document, then the same through the SDK's ``Project``/``Document`` objects — and prints what it
saw. This test checks that against the invoice and against the emulator's own state.
"""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

from connectors.vendors.konfuzio.emulator import EmulatorOptions, create_app
from tests.conftest import require_service
from tests.invoices import expected_fields, random_spec, render_pdf
from tests.servers import serve

ROOT = Path(__file__).resolve().parents[1]
SDK_PYTHON = ROOT / ".venv-konfuzio" / "bin" / "python"
SDK_VERSION = "0.3.52"
"""The version checked here (and installed by ``.ci/run``)."""
FLOW = ROOT / "tests" / "konfuzio_sdk_flow.py"


def test_official_konfuzio_sdk_works_against_the_emulator(tmp_path: Path):
    require_service(
        SDK_PYTHON.exists(),
        f"konfuzio-sdk's virtual environment is missing: python3.11 -m venv .venv-konfuzio && "
        f".venv-konfuzio/bin/pip install 'konfuzio-sdk=={SDK_VERSION}'",
    )
    spec = random_spec(31)
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(render_pdf(spec))
    work = tmp_path / "work"
    work.mkdir()
    app = create_app(EmulatorOptions(delay=0.2, callback_retry_delays=()))
    state = app.state.emulator
    with serve(app) as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KONFUZIO_")}
        env["KONFUZIO_HOST"] = root
        done = subprocess.run(
            [str(SDK_PYTHON), str(FLOW), root, "user@example.com", "secret", str(pdf)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-6000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        uploads = state.requests.entries(method="POST", path="/api/v3/documents")

    assert seen["sdk_version"] == SDK_VERSION
    assert seen["projects"] == [1] and seen["project_name"] == "Invoices"
    assert len(seen["labels"]) == 24 and "invoice_number" in seen["labels"]
    assert seen["label_sets"] == [1, 2, 3]
    assert seen["categories"] == {"1": [1, 3], "2": [2, 3]}

    document_id = seen["document"]
    assert seen["upload_status"] == 201 and seen["status_data"] == 2
    assert [r.attributes["document"] for r in uploads] == [document_id], "one upload"
    for name in ("invoice_number", "issue_date", "supplier_iban", "customer_name"):
        expected = expected_fields(spec)[name]
        shown = expected.isoformat() if hasattr(expected, "isoformat") else expected
        assert seen["values"][name] == shown, name
    assert Decimal(seen["values"]["total_amount"]) == spec.total_amount

    # The revisions the SDK made are stored at the emulator.
    revised = state.annotations[seen["revised"]]
    assert revised.revised and revised.is_correct and revised.revised_by == "user@example.com"
    declined = state.annotations[seen["declined"]]
    assert declined.revised and not declined.is_correct
    created = state.annotations[seen["created"]]
    assert created.origin == "api.v3" and created.revised and created.is_correct
    assert Decimal(seen["created_value"]) == spec.total_amount
    assert seen["after"][str(seen["revised"])] == {"revised": True, "is_correct": True}
    assert seen["after"][str(seen["declined"])] == {"revised": True, "is_correct": False}

    assert seen["renamed"] == "renamed.pdf" == state.documents[document_id].file_name
    assert seen["documents"] == [document_id]
    assert seen["pdf"] == "%PDF-"
    on_file = sum(1 for a in state.annotations.values() if a.document_id == document_id)
    assert seen["sdk_document"] == {
        "category": 1,
        "pages": 1,
        "annotations": on_file,
        "invoice_number": [[spec.invoice_number]],
    }
