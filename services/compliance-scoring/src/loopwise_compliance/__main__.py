"""`python -m loopwise_compliance` is `loopwise-compliance`."""

import sys

from loopwise_compliance.cli import main

sys.exit(main())
