"""Loopwise compliance-scoring service: compliance findings per segment and per call."""
