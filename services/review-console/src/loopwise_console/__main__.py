"""`python -m loopwise_console`."""

import sys

from loopwise_console.cli import main

sys.exit(main())
