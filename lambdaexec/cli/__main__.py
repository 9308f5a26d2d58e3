"""``python -m lambdaexec.cli``: the ``lambdaexec`` command (as before ``cli`` became a package)."""

import sys

from lambdaexec.cli import main

sys.exit(main())
