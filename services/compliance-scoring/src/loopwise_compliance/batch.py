"""`loopwise-compliance batch`: the rules over JSON lines (segments or whole dialogues), no Kafka.

Segment lines (`call_id`, `speaker`, `start`, `text`, optional `end`, `segment_id`,
`redactions`, `tenant_id`, `queue`) get `findings`; consecutive lines with the same
`call_id` form one call, and when the run of a call ends (another call_id, a
dialogue line or the end of input) an extra line `{"call_id", "call_findings",
"segments_checked", "rule_pack"}` follows. Dialogue lines (`turns`) get `findings`
on every turn and `call_findings`, `rule_pack` on the line. Every other field
passes through unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import ValidationError

from loopwise.events.transcripts import RedactionSpan
from loopwise_compliance.engine import (
    CallState,
    CompiledPack,
    Segment,
    check_segment,
    decide_call,
    observe_segment,
)
from loopwise_compliance.handler import ComplianceScorer
from loopwise_compliance.matching import normalise


class BadLine(ValueError):
    """A line that is not a segment or dialogue the rules can read."""


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"`{name}` must be a number, got {value!r}")
    return float(value)


def _segment(item: dict[str, Any], default_id: str, default_start: float) -> Segment:
    text = item.get("text")
    if not isinstance(text, str):
        raise BadLine("`text` must be a string")
    start = _float(item["start"], "start") if "start" in item else default_start
    end = _float(item["end"], "end") if item.get("end") is not None else start
    if end < start:
        raise BadLine(f"`end` ({end}) is before `start` ({start})")
    try:
        spans = tuple(RedactionSpan.model_validate(s) for s in item.get("redactions") or [])
    except ValidationError as exc:
        raise BadLine(f"`redactions`: {exc.errors()[0]['msg']}") from None
    return Segment(
        segment_id=str(item.get("segment_id") or default_id),
        speaker=str(item.get("speaker") or "unknown"),
        start_s=start,
        end_s=end,
        text=text,
        redactions=spans,
    )


def _dump(findings: Iterable[Any]) -> list[dict[str, Any]]:
    return [f.model_dump(mode="json", exclude_none=True) for f in findings]


@dataclass
class _OpenCall:
    call_id: str
    cp: CompiledPack
    state: CallState


class BatchScorer:
    """Adds findings to batch lines, keeping per-call state across consecutive segment lines."""

    def __init__(self, scorer: ComplianceScorer) -> None:
        self.scorer = scorer
        self._open: _OpenCall | None = None

    def _pack_ref(self, cp: CompiledPack) -> dict[str, str]:
        return {"name": cp.pack.name, "version": cp.pack.version, "hash": cp.pack.content_hash}

    def close(self) -> Iterator[dict[str, Any]]:
        """End the open call, if any, and give its call-level line."""
        if self._open is None:
            return
        call, self._open = self._open, None
        yield {
            "call_id": call.call_id,
            "call_findings": _dump(decide_call(call.cp, call.state)),
            "segments_checked": call.state.segments_checked,
            "rule_pack": self._pack_ref(call.cp),
        }

    def line(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The output lines for one input line (possibly a finished call's line first)."""
        if isinstance(item.get("turns"), list):
            dialogue = self._dialogue(item)  # first: a bad dialogue line ends no run
            yield from self.close()
            yield dialogue
            return
        call_id = item.get("call_id")
        if "text" not in item:
            yield item  # not ours (e.g. another tool's call summary line): pass it on
            return
        if not isinstance(call_id, str) or not call_id:
            raise BadLine("a segment line needs a string `call_id`")
        call = self._open if self._open is not None and self._open.call_id == call_id else None
        index = call.state.segments_checked if call is not None else 0
        # Read the line before touching any call: a bad line ends no run and opens none.
        segment = _segment(item, f"{call_id}:{index}", float(index))
        if call is None:
            yield from self.close()
            tenant = item.get("tenant_id")
            cp = self.scorer.compiled(tenant if isinstance(tenant, str) else None)
            state = CallState(tenant_id=str(tenant or "batch"), call_id=call_id)
            call = self._open = _OpenCall(call_id, cp, state)
        if isinstance(item.get("queue"), str):
            call.state.queue = item["queue"]
        words = normalise(segment.text)
        findings = check_segment(call.cp, segment, call_id, call.state.queue, words)
        if segment.segment_id not in call.state.seen_segment_ids:
            observe_segment(call.cp, call.state, segment, words)
        yield {**item, "findings": _dump(findings)}

    def _dialogue(self, item: dict[str, Any]) -> dict[str, Any]:
        call_id = str(item.get("call_id") or item.get("id") or "")
        if not call_id:
            raise BadLine("a dialogue line needs `id` or `call_id`")
        tenant = item.get("tenant_id")
        cp = self.scorer.compiled(tenant if isinstance(tenant, str) else None)
        queue = item.get("queue") if isinstance(item.get("queue"), str) else None
        state = CallState(tenant_id=str(tenant or "batch"), call_id=call_id, queue=queue)
        turns: list[Any] = []
        for index, turn in enumerate(item["turns"]):
            if not isinstance(turn, dict):
                raise BadLine(f"turn {index} is not an object")
            try:
                segment = _segment(turn, f"{call_id}:{index}", float(index))
            except BadLine as exc:
                raise BadLine(f"turn {index}: {exc}") from None
            words = normalise(segment.text)
            findings = check_segment(cp, segment, call_id, queue, words)
            observe_segment(cp, state, segment, words)
            turns.append({**turn, "findings": _dump(findings)})
        return {
            **item,
            "turns": turns,
            "call_findings": _dump(decide_call(cp, state)),
            "rule_pack": self._pack_ref(cp),
        }


def run_batch(scorer: ComplianceScorer, source: TextIO, out: TextIO, err: TextIO) -> int:
    """Score every line of `source` into `out`; exit status 1 if any line could not be scored.

    A line that is not JSON is reported on `err` and dropped; a JSON line the rules
    cannot read is reported and passed through unscored, and changes no call (it neither
    ends the open call's run nor starts one).
    """
    batch = BatchScorer(scorer)
    bad = 0
    for number, raw in enumerate(source, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad += 1
            print(f"line {number}: skipped, not JSON: {exc}", file=err)
            continue
        try:
            if not isinstance(item, dict):
                raise BadLine("a line must be a JSON object")
            lines = list(batch.line(item))
        except BadLine as exc:
            bad += 1
            print(f"line {number}: passed through unscored: {exc}", file=err)
            lines = [item]
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    for line in batch.close():
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    out.flush()
    if bad:
        print(f"{bad} line(s) not scored", file=err)
    return 1 if bad else 0


def main_batch(scorer: ComplianceScorer, path: str) -> int:
    """Run the batch over a file or `-` (stdin) to stdout."""
    if path == "-":
        return run_batch(scorer, sys.stdin, sys.stdout, sys.stderr)
    with open(path, encoding="utf-8") as source:  # noqa: PTH123 - plain text stream
        return run_batch(scorer, source, sys.stdout, sys.stderr)
