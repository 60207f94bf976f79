"""Loopwise sentiment service: sentiment scoring per segment and per call."""
