"""`python -m loopwise_audit` is `loopwise-audit`."""

import sys

from loopwise_audit.cli import main

sys.exit(main())
