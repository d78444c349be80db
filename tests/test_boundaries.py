"""The engine never names a concrete connector: it reaches sources, vendors and destinations
only through the registry, so a new connector plugs in without an engine change."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONCRETE = ("connectors.vendors", "connectors.sources", "connectors.destinations")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, str(node.args[0].value)))
    return found


def test_nothing_in_daemon_imports_a_concrete_connector():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in sorted((ROOT / "daemon").rglob("*.py"))
        for line, name in _imports(path)
        if name.startswith(CONCRETE)
    ]
    assert offenders == []


def test_the_scan_would_catch_one(tmp_path):
    probe = tmp_path / "bad.py"
    probe.write_text(
        "from connectors.sources.mailbox import MailboxSource\n"
        "def f():\n    import connectors.vendors.local\n"
        "from connectors import destinations\n"
    )
    names = [name for _, name in _imports(probe)]
    assert {n for n in names if n.startswith(CONCRETE)} == {
        "connectors.sources.mailbox",
        "connectors.sources.mailbox.MailboxSource",
        "connectors.vendors.local",
        "connectors.destinations",
    }


def test_the_engine_loads_no_connector_code_until_a_configuration_asks_for_it():
    """Importing the CLI, the runtime, the web app, the config loader and the registry loads
    no source, vendor or destination module."""
    code = (
        "import sys\n"
        "import connectors.registry, daemon.cli, daemon.config, daemon.runtime, daemon.web\n"
        "import daemon.status, daemon.scheduler\n"
        f"print([m for m in sys.modules if m.startswith({CONCRETE!r})])\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == "[]"
