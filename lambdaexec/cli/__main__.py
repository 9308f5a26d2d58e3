"""``python -m lambdaexec.cli``: the ``lambdaexec`` command."""

import sys

from lambdaexec.cli import main

sys.exit(main())
