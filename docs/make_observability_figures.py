"""Regenerate the figure of docs/observability.md: the demo's timeline on local workers.

    python docs/make_observability_figures.py   # writes docs/img/timeline.png

It runs ``lambdaexec demo --calls 48 --size 512 --loops 8 --plot docs/img/timeline.png`` with
progress off, exactly as a user would; on Lambda (``LAMBDAEXEC_BACKEND=lambda``) the same
command draws the same figure for many more calls.
"""

from __future__ import annotations

import os
import sys

from lambdaexec.cli import main

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ.setdefault("LAMBDAEXEC_PROGRESS", "false")
    sys.exit(main(["demo", "--calls", "48", "--size", "512", "--loops", "8",
                   "--plot", os.path.join(here, "img", "timeline.png")]))
