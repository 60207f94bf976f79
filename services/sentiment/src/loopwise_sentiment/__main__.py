"""`python -m loopwise_sentiment` is `loopwise-sentiment`."""

import sys

from loopwise_sentiment.cli import main

sys.exit(main())
