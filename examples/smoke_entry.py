#!/usr/bin/env python3
"""Stand-in for train.py: ``glm45-launch up --entry examples/smoke_entry.py``.

A real Ray driver (see ``glm45_launch/testing/smoke_entry.py``): checks every node and GPU
joined, probes each node's runtime env and writes ``smoke-report.json`` in its cwd.
"""

import sys

from glm45_launch.testing.smoke_entry import main

if __name__ == "__main__":
    sys.exit(main())
