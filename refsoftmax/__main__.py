"""``python -m refsoftmax certify ...``: the same as the ``refsoftmax`` console script."""

import sys

from refsoftmax.conformance.cli import main

sys.exit(main())
