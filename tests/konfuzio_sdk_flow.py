"""What a user of the official ``konfuzio-sdk`` does, run against the Konfuzio emulator.

Runs in the SDK's own virtual environment (``.venv-konfuzio``), never in docrelay's: it imports
nothing of docrelay. ``tests/test_konfuzio_sdk.py`` starts the emulator and runs

    .venv-konfuzio/bin/python tests/konfuzio_sdk_flow.py HOST USER PASSWORD PDF

with ``KONFUZIO_HOST=HOST`` in the environment (the SDK reads it at import, and some of its
functions use it instead of the session's host) in an empty working directory (the SDK writes
``.env`` and its project folder there). It prints one JSON object with what it saw; the test
checks it against the emulator's state.
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version


def main() -> int:
    host, user, password, pdf = sys.argv[1:5]
    os.environ["KONFUZIO_HOST"] = host
    from dotenv import dotenv_values
    from konfuzio_sdk.api import (
        change_document_annotation,
        delete_document_annotation,
        download_file_konfuzio_api,
        get_document_annotations,
        get_document_details,
        get_meta_of_files,
        get_project_categories,
        get_project_details,
        get_project_label_sets,
        get_project_labels,
        get_project_list,
        init_env,
        konfuzio_session,
        post_document_annotation,
        update_document_konfuzio_api,
        upload_file_konfuzio_api,
    )
    from konfuzio_sdk.data import Project

    out: dict[str, object] = {"sdk_version": version("konfuzio-sdk")}
    # `konfuzio_sdk init` does this: ask for a token, keep it in .env.
    init_env(user, password, host=host, working_directory=os.getcwd())
    token = dotenv_values(".env")["KONFUZIO_TOKEN"]
    session = konfuzio_session(token=token, host=host)

    out["projects"] = [p["id"] for p in get_project_list(session=session)]
    out["project_name"] = get_project_details(1, session=session)["name"]
    labels = get_project_labels(1, session=session)
    out["labels"] = sorted(label["name"] for label in labels)
    out["label_sets"] = [s["id"] for s in get_project_label_sets(1, session=session)]
    categories = get_project_categories(1, session=session)
    out["categories"] = {c["id"]: [s["id"] for s in c["schema"]] for c in categories}

    response = upload_file_konfuzio_api(pdf, project_id=1, session=session, category_id=1)
    out["upload_status"] = response.status_code
    document_id = response.json()["id"]
    out["document"] = document_id
    deadline = time.monotonic() + 60
    details = get_document_details(document_id, session=session)
    while details["status_data"] != 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"document never done: {details['status_data']}")
        time.sleep(0.1)
        details = get_document_details(document_id, session=session)
    out["status_data"] = details["status_data"]
    out["annotation_sets"] = [s["label_set"]["id"] for s in details["annotation_sets"]]

    annotations = get_document_annotations(document_id, session=session)
    by_label = {a["label"]["name"]: a for a in annotations}
    out["values"] = {name: a["normalized"] for name, a in by_label.items()}
    revised = by_label["invoice_number"]
    change_document_annotation(revised["id"], session=session, revised=True, is_correct=True)
    out["revised"] = revised["id"]
    declined = by_label["customer_name"]
    out["declined"] = delete_document_annotation(declined["id"], session=session)

    box = by_label["total_amount"]["span"][0]
    span = {k: box[k] for k in ("page_index", "x0", "x1", "y0", "y1")}
    amount_due = next(label["id"] for label in labels if label["name"] == "amount_due")
    created = post_document_annotation(
        document_id,
        spans=[span],
        label_id=amount_due,
        revised=True,
        is_correct=True,
        session=session,
        label_set_id=1,
    )
    out["created"] = created.json()["id"]
    after = {a["id"]: a for a in get_document_annotations(document_id, session=session)}
    out["after"] = {
        str(i): {"revised": after[i]["revised"], "is_correct": after[i]["is_correct"]}
        for i in (revised["id"], declined["id"], out["created"])
    }
    out["created_value"] = after[out["created"]]["normalized"]

    renamed = update_document_konfuzio_api(document_id, session=session, file_name="renamed.pdf")
    out["renamed"] = renamed["data_file_name"]
    out["documents"] = [d["id"] for d in get_meta_of_files(1, session=session)]
    out["pdf"] = download_file_konfuzio_api(document_id, session=session)[:5].decode()

    # The SDK's object layer over the same calls: project, categories, documents, annotations.
    project = Project(id_=1, update=True, session=session)
    document = project.get_document_by_id(document_id)
    found = document.annotations(use_correct=False)
    out["sdk_document"] = {
        "category": document.category.id_,
        "pages": len(document.pages()),
        "annotations": len(found),
        "invoice_number": [a.offset_string for a in found if a.label.name == "invoice_number"],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
