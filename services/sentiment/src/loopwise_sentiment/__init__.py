"""Loopwise sentiment service: sentiment per transcript segment and rolling per call.

Consumes `loopwise.cx.transcripts.v1` (TranscriptSegmentV1) and
`loopwise.cx.calls.v1` (CallEndedV1); produces `loopwise.cx.sentiment.v1`:
a SegmentSentimentV1 for every segment (label, score in [-1, 1], confidence in
[0, 1], the signals behind them, model name and version) and a CallSentimentV1
for the customer side of a call on a significant change and at the call's end.

    loopwise-sentiment run                       # the Kafka service (LOOPWISE_SENTIMENT_* env)
    loopwise-sentiment check-config              # settings, model, state store
    loopwise-sentiment batch calls.jsonl         # JSON lines (segments or dialogues) -> + sentiment
    loopwise-sentiment calibrate relabels.jsonl --out cal.json --version cal-2
                                                 # fit a calibration from reviewer labels

Models: `vader-ngram` (default), `vader-calibrated` or `vader`, or any `package.module:factory`
returning a `models.SentimentModel`; chosen with LOOPWISE_SENTIMENT_MODEL and
LOOPWISE_SENTIMENT_MODEL_OPTIONS. Per-call state lives in SQLite
(LOOPWISE_SENTIMENT_STATE_PATH); see `state` for why and what it guarantees.
"""
