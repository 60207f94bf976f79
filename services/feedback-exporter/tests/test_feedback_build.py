"""`loopwise-feedback build`: training sets from a topic dump, idempotent, bad lines named."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest

from loopwise_feedback.cli import main


def test_build_from_a_dump_twice_adds_nothing_the_second_time(
    tmp_path: Path, fb: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        fb.make_case(
            1, [fb.Seg("my card is blocked", "my card was blocked", "negative", "neutral")]
        ),
        fb.make_case(
            2, [fb.Seg("thanks", None, "positive", "positive")], verdicts=(("r.x", True),)
        ),
    ]
    lines = [
        # CloudEvents structured mode for the first case, bare bodies for the second.
        json.dumps(
            {"type": type(e).event_type, "id": f"ev-{i}", "data": json.loads(e.model_dump_json())}
        )
        for i, e in enumerate([cases[0].decision, cases[0].task, cases[0].outcome])
    ] + [e.model_dump_json() for e in (cases[1].task, cases[1].decision, cases[1].outcome)]
    dump = tmp_path / "dump.jsonl"
    dump.write_text("\n".join([*lines, "{broken", '{"hello": 1}']) + "\n")
    root = tmp_path / "data"

    assert main(["build", str(dump), "--root", str(root)]) == 1  # two unusable lines
    out = capsys.readouterr()
    assert "stored 6 event(s), 0 already seen, 2 unusable line(s)" in out.out
    assert f"{dump}:7: invalid JSON" in out.err
    assert f"{dump}:8: not a review task, decision or outcome" in out.err

    (asr,) = (root / "datasets" / "asr" / "v1").glob("tenant=*/date=*/model=*")
    table = pq.read_table(asr / "data.parquet").to_pylist()
    assert [(r["decision_id"], r["text"]) for r in table] == [
        ("dec-call-0001", "my card was blocked"),
        ("dec-call-0002", "thanks"),
    ]
    before = {p: p.read_bytes() for p in root.rglob("*.json*")}

    assert main(["build", str(dump), "--root", str(root)]) == 1
    assert "stored 0 event(s), 6 already seen" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in root.rglob("*.json*")} == before
