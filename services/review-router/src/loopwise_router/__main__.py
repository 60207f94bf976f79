"""`python -m loopwise_router` runs the CLI."""

import sys

from loopwise_router.cli import main

sys.exit(main())
