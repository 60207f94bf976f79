"""`python -m loopwise_feedback` is `loopwise-feedback`."""

import sys

from loopwise_feedback.cli import main

sys.exit(main())
