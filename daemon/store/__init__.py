"""The SQL store: tables, engine set-up, migrations, the blob store and the public views."""
