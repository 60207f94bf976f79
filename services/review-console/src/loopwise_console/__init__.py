"""Loopwise review-console service: the reviewers' web console."""
