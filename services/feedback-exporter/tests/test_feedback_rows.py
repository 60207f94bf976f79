"""Rows one decision makes from its task: NeMo fields, labels, verdicts, redaction, versions."""

from __future__ import annotations

from types import ModuleType

from loopwise.events import TranscriptCorrection
from loopwise_feedback.handler import (
    ASR,
    COMPLIANCE,
    LABEL_STUDIO,
    SENTIMENT,
    decision_rows,
    model_key,
)
from tests.support.card_numbers import holds_test_card

TEMPLATE = "audio/{tenant_id}/{call_id}/{speaker}.wav"


def rows_of(case, kind):  # type: ignore[no-untyped-def]
    made = decision_rows(case.task, case.decision, "ev-1", audio_path_template=TEMPLATE)
    return [r for r in made.rows if r.kind == kind], made


def test_corrected_and_accepted_segments_become_nemo_rows(fb: ModuleType) -> None:
    case = fb.make_case(
        1,
        [
            fb.Seg("my card is blocked", corrected="my card was blocked today"),
            fb.Seg("thanks for calling", asr=fb.ASR_V2),
        ],
    )
    asr, made = rows_of(case, ASR)
    assert made.skipped == []
    assert [r.row_id for r in asr] == ["dec-call-0001/seg-0001", "dec-call-0001/seg-0002"]
    first, second = (r.body for r in asr)
    assert first["audio_filepath"] == "audio/acme/call-0001/customer.wav"
    assert (first["offset"], first["duration"]) == (3.0, 4.5)
    assert first["text"] == "my card was blocked today"
    assert first["pred_text"] == "my card is blocked"
    assert first["corrected"] is True
    # Approving a task confirms the segment the reviewer left alone.
    assert second["text"] == second["pred_text"] == "thanks for calling"
    assert second["corrected"] is False
    assert second["audio_filepath"] == "audio/acme/call-0001/agent.wav"
    assert (asr[0].model_version, asr[1].model_version) == (fb.ASR_V1.version, fb.ASR_V2.version)
    assert asr[0].date == "2026-11-25"
    assert asr[0].model_key == "faster-whisper_whisper-tiny@ct2-int8"


def test_rejected_task_gives_only_explicit_corrections(fb: ModuleType) -> None:
    case = fb.make_case(
        2,
        [fb.Seg("hello there", corrected="hello"), fb.Seg("untouched words")],
        verdict="reject",
    )
    asr, _ = rows_of(case, ASR)
    assert [r.body["segment_id"] for r in asr] == ["seg-0001"]


def test_sentiment_and_compliance_labels(fb: ModuleType) -> None:
    case = fb.make_case(
        3,
        [fb.Seg("it is fine", model_label="positive", human_label="neutral")],
        verdicts=(("card_data.spoken", True), ("disclosure.missing", False)),
    )
    sentiment, _ = rows_of(case, SENTIMENT)
    assert len(sentiment) == 1
    body = sentiment[0].body
    assert (body["label"], body["model_label"], body["agree"]) == ("neutral", "positive", False)
    assert (sentiment[0].model_name, sentiment[0].model_version) == ("vader", "3.3.2")
    compliance, _ = rows_of(case, COMPLIANCE)
    assert [(r.body["rule_id"], r.body["true_positive"]) for r in compliance] == [
        ("card_data.spoken", True),
        ("disclosure.missing", False),
    ]
    assert {(r.model_name, r.model_version) for r in compliance} == {
        (fb.PACK.name, fb.PACK.version)
    }
    assert compliance[0].body["category"] == "card_data"
    assert compliance[0].body["evidence"] == "[CARD_NUMBER]"


def test_label_studio_task_pairs_predictions_with_the_annotation(fb: ModuleType) -> None:
    case = fb.make_case(
        4, [fb.Seg("my card is blocked", corrected="my card was blocked", human_label="negative")]
    )
    (ls,), _ = rows_of(case, LABEL_STUDIO)
    task = ls.body
    assert task["data"]["audio"] == "audio/acme/call-0004/customer.wav"
    assert task["data"]["text"] == "my card is blocked"
    assert task["predictions"][0]["result"][0]["value"]["text"] == ["my card is blocked"]
    assert task["predictions"][1]["result"][0]["value"]["choices"] == ["Neutral"]
    annotation = task["annotations"][0]["result"]
    assert annotation[0]["value"]["text"] == ["my card was blocked"]
    assert annotation[1]["value"]["choices"] == ["Negative"]


def test_a_number_typed_by_the_reviewer_is_redacted_before_it_is_written(fb: ModuleType) -> None:
    case = fb.make_case(
        5, [fb.Seg("my card is [CARD_NUMBER]", corrected="my card is 4111 1111 1111 1111")]
    )
    asr, _ = rows_of(case, ASR)
    assert asr[0].body["text"] == "my card is [CARD_NUMBER]"
    assert not holds_test_card(str([r.body for r in rows_of(case, LABEL_STUDIO)[0]]))


def test_unknown_segments_and_models_are_reported_not_invented(fb: ModuleType) -> None:
    case = fb.make_case(6, [fb.Seg("text", asr=None)])
    bad = case.decision.model_copy(
        update={
            "transcript_corrections": [
                *case.decision.transcript_corrections,
                TranscriptCorrection(segment_id="seg-9999", text="ghost"),
            ]
        }
    )
    made = decision_rows(case.task, bad, "ev-1", audio_path_template=TEMPLATE)
    assert made.skipped == ["segment 'seg-9999' is not in task 'task-call-0006'"]
    asr = [r for r in made.rows if r.kind == ASR]
    assert [(r.model_name, r.model_version) for r in asr] == [("unknown", "unknown")]


def test_model_key_is_folder_safe() -> None:
    assert model_key("org/model name", "v1:2") == "org_model_name@v1_2"
