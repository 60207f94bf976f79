"""Loopwise transcription service: real-time and post-call speech-to-text with redaction."""
