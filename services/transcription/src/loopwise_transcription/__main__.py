"""`python -m loopwise_transcription` runs the CLI."""

import sys

from loopwise_transcription.cli import main

sys.exit(main())
