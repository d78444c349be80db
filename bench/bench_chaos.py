"""Benchmark: the chaos scenario of ``tests/test_chaos.py`` at a larger size (issue 17).

N daemons (default 3) on one fresh PostgreSQL database, the Rossum emulator and the downstream
receiver failing a fifth of the calls (the emulator also throttles with 429), processes
SIGKILLed at random and restarted. Prints what was counted outside the daemons: documents lost,
exports beyond one per document, uploads made twice (target ≤ 0.1 %, each ending as one
document).

    .venv/bin/python bench/bench_chaos.py --docs 5000 --kills 50
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_scale import drop_database, fresh_database  # noqa: E402
from tests.chaos import run_chaos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="docrelay-bench-chaos-"))
    name, url = fresh_database()
    try:
        result = run_chaos(
            root, url, docs=args.docs, processes=args.processes, kills=args.kills,
            kill_every=args.kill_every, seed=args.seed, timeout=3600,
        )  # fmt: skip
        print(result.summary())
        if result.duplicate_uploads:
            print(f"  uploaded twice: {sorted(result.duplicate_uploads)}")
    finally:
        drop_database(name)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
