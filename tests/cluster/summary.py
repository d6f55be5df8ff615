"""Print the cluster suite's figures as one JSON line (the last line of `make test-cluster`).

Usage: python -m tests.cluster.summary MEASURE_FILE PYTEST_EXIT_STATUS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str, status: int) -> None:
    measured = Path(path)
    scenarios = {}
    if measured.exists():
        for line in measured.read_text().splitlines():
            if line.strip():
                figures = json.loads(line)
                scenarios[figures.pop("test")] = figures
    print(json.dumps({"passed": status == 0, "pytest_status": status, "scenarios": scenarios},
                     sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
