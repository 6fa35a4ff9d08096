"""Write tests/durations.json (seconds per test file) from a pytest JUnit XML report.

`make test` starts the longest files first (tests/conftest.py), so the three at a time
finish together instead of one long file running alone at the end. Refresh the figures
after a run with `--junitxml`:

    .venv/bin/python -m pytest -q -n 3 --dist loadfile --junitxml=/tmp/junit.xml
    .venv/bin/python scripts/test_durations.py /tmp/junit.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "durations.json"


def per_file(report: Path) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).iter("testcase"):
        # classname is the module's dotted path ("tests.test_cli"), with a class if any.
        parts = case.get("classname", "").split(".")
        module = next((p for p in parts if p.startswith("test_")), None)
        if module is not None:
            seconds[f"{module}.py"] += float(case.get("time", "0"))
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    found = per_file(Path(argv[0]))
    OUT.write_text(json.dumps({k: round(v, 1) for k, v in found.items()}, indent=1) + "\n")
    print(f"{OUT}: {len(found)} files, {sum(found.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
