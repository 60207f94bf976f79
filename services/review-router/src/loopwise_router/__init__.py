"""Loopwise review-router service: risk-threshold routing, holds, sampling and SLAs."""
