"""Loopwise audit-writer service: the hash-chained audit trail."""
