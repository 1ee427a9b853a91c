"""Compare a run of flax.nnx's test suite on nnxlib with nnxlib/_compat_suite.py.

usage: python tools/flax_suite_report.py OUT_DIR
OUT_DIR is the --out folder of ``../shared/tools/flax_suite.py nnxlib``. Prints the
totals, every failing test that is not listed (with its message), and every listed
test that passes; exits 1 when either list is not empty.
"""

from __future__ import annotations

import pathlib
import sys
import xml.etree.ElementTree as ET

from nnxlib._compat_suite import SUITE_FAILURES, reason_for


def results(out_dir: pathlib.Path):
    """Yield ``(test_file, "Class::test", outcome, message)`` for each test case."""
    for xml in sorted(out_dir.glob("*.xml")):
        test_file = xml.stem.replace("__", "/") + ".py"
        for case in ET.parse(xml).getroot().iter("testcase"):
            cls = (case.get("classname") or "").rpartition(".")[2]
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome, message = "failed", (child.get("message") or "")[:300]
                elif child.tag == "skipped":
                    outcome = "skipped"
            yield test_file, f"{cls}::{case.get('name')}", outcome, message


def main(argv: list[str]) -> int:
    out_dir = pathlib.Path(argv[0])
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    unlisted, fixed = [], []
    for test_file, test_id, outcome, message in results(out_dir):
        counts[outcome] += 1
        listed = reason_for(test_file, test_id) is not None
        if outcome == "failed" and not listed:
            unlisted.append(f"{test_file}::{test_id}  {message.splitlines()[0] if message else ''}")
        elif outcome == "passed" and listed:
            fixed.append(f"{test_file}::{test_id}")
    total = sum(counts.values())
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} "
          f"skipped of {total}")
    print(f"listed in nnxlib/_compat_suite.py: {sum(map(len, SUITE_FAILURES.values()))} "
          "patterns")
    for title, rows in (("failing, not listed", unlisted), ("listed, but passing", fixed)):
        if rows:
            print(f"\n{title} ({len(rows)}):")
            print("\n".join(f"  {row}" for row in rows))
    return 1 if unlisted or fixed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
