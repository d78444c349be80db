"""Alembic environment. The daemon runs it on start with its own connection; `alembic` works too
(``alembic -c migrations/alembic.ini upgrade head`` with ``DOCRELAY_STORE__URL`` set)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from daemon.store.models import Base

config = context.config
target_metadata = Base.metadata


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or os.environ["DOCRELAY_STORE__URL"]
    engine = create_engine(url)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
