"""Latency from the end of an utterance to its published segment, 8 calls streaming in real time.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 uv run python bench/asr_stream.py [--calls 8]

Starts `loopwise-transcription run` as a process on fresh topics, streams CALLS two-party
8 kHz mu-law calls (Asterisk prompts placed on an agent and a customer channel) in real
time in 100 ms chunks, and reads the segments back. An utterance's end is the call-time
end of its last recognised word (segment `end_s`), mapped to wall time by when that
audio was sent; latency is the segment's arrival minus that. It includes the silence the
VAD waits for (500 ms by default) and any queueing behind other calls' utterances.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "asr" / "clips"
PROMPTS = [
    "asterisk_8k_pls-hold-while-try.wav",
    "asterisk_8k_privacy-prompt.wav",
    "asterisk_8k_agent-pass.wav",
    "asterisk_8k_confbridge-pin.wav",
    "asterisk_8k_followme_status.wav",
    "asterisk_8k_queue-youarenext.wav",
    "asterisk_8k_vm-invalid-password.wav",
]
CHUNK_MS = 100


def references() -> dict[str, str]:
    """Reference text of each clip, from the manifest."""
    lines = (CLIPS.parent / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {Path(c["file"]).name: c["reference_text"] for c in map(json.loads, lines)}


def call_audio(rng: np.random.Generator, seconds: float) -> tuple[list[np.ndarray], list[str]]:
    """Two 8 kHz channels, the parties taking turns with prompts and pauses; the prompts said."""
    import soundfile  # type: ignore[import-untyped]

    channels = [np.zeros(int(seconds * 8000), dtype=np.int16) for _ in range(2)]
    at, turn, said = int(rng.uniform(0.3, 1.5) * 8000), 0, []
    while True:
        name = PROMPTS[rng.integers(len(PROMPTS))]
        clip, _ = soundfile.read(str(CLIPS / name), dtype="int16")
        if at + clip.size > channels[0].size:
            break
        channels[turn][at : at + clip.size] = clip
        at += clip.size + int(rng.uniform(0.6, 1.5) * 8000)
        turn = 1 - turn
        said.append(name)
    return channels, said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    args = parser.parse_args()
    if not CLIPS.is_dir():
        print(f"no ASR clips at {CLIPS}: nothing to measure", file=sys.stderr)
        return 0
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    load_before = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout

    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from loopwise.events import (
        AudioChunkV1,
        AudioFormat,
        CallEndedV1,
        CallStartedV1,
        ChannelSpec,
        encode,
    )
    from loopwise_transcription.audio import encode_g711

    run = uuid.uuid4().hex[:8]
    topics = {name: f"bench.{name}.{run}" for name in ("calls", "audio", "out", "dlq")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=6, replication_factor=1) for t in topics.values()]
    ).values():
        future.result(30)

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LOOPWISE_TRANSCRIPTION_GROUP_ID": f"bench-{run}",
        "LOOPWISE_TRANSCRIPTION_INPUT_TOPICS": json.dumps([topics["calls"], topics["audio"]]),
        "LOOPWISE_TRANSCRIPTION_OUTPUT_TOPIC": topics["out"],
        "LOOPWISE_TRANSCRIPTION_DEAD_LETTER_TOPIC": topics["dlq"],
        "LOOPWISE_TRANSCRIPTION_OBSERVABILITY__PORT": "0",
        "LOOPWISE_TRANSCRIPTION_POLL_TIMEOUT_S": "0.05",
        "LOOPWISE_TRANSCRIPTION_BATCH_SIZE": "50",
    }
    log_path = Path(os.environ.get("BENCH_SERVICE_LOG", f"/tmp/asr_stream_{run}.log"))
    with log_path.open("wb") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "loopwise_transcription", "run"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{run}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topics["out"]])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    send_lock = threading.Lock()

    def send(topic: str, event: Any) -> None:
        key, value, headers, _ = encode(event, source="bench")
        with send_lock:
            producer.produce(topic, key=key, value=value, headers=cast(Any, headers))
            producer.poll(0)

    # Warm-up call: the service must have loaded the model and joined its group first.
    warm = f"warm-{run}"
    fmt = AudioFormat(encoding="mulaw", sample_rate_hz=8000, channels=2)
    roles = [ChannelSpec(index=0, role="agent"), ChannelSpec(index=1, role="customer")]
    now = datetime.now(UTC)
    common = {"tenant_id": "bench", "occurred_at": now}
    rng = np.random.default_rng(7)
    warm_audio, _ = call_audio(rng, 12.0)
    send(
        topics["calls"],
        CallStartedV1(call_id=warm, queue="q", region="r", audio=fmt, channels=roles, **common),
    )
    for seq, at in enumerate(range(0, warm_audio[0].size, 8000)):
        for ch, samples in enumerate(warm_audio):
            piece = encode_g711(samples[at : at + 8000], "mulaw")
            send(
                topics["audio"],
                AudioChunkV1(call_id=warm, channel=ch, sequence=seq, audio=piece, **common),
            )
    last = {"0": seq, "1": seq}
    send(topics["calls"], CallEndedV1(call_id=warm, last_audio_sequence=last, **common))
    producer.flush(30)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            break
    else:
        service.kill()
        print(f"service produced nothing for the warm-up call; see {log_path}", file=sys.stderr)
        return 1

    calls = {f"bench-{run}-{i}": call_audio(rng, args.seconds) for i in range(args.calls)}
    expected = sum(len(said) for _, said in calls.values())
    texts: dict[str, list[tuple[float, str]]] = {call_id: [] for call_id in calls}
    starts: dict[str, float] = {}

    def stream(call_id: str, channels: list[np.ndarray]) -> None:
        send(
            topics["calls"],
            CallStartedV1(
                call_id=call_id, queue="q", region="r", audio=fmt, channels=roles, **common
            ),
        )
        step = 8 * CHUNK_MS
        t0 = time.monotonic()
        starts[call_id] = t0
        for seq, at in enumerate(range(0, channels[0].size, step)):
            due = t0 + (at + step) / 8000  # a chunk is sent once its audio has been spoken
            time.sleep(max(0.0, due - time.monotonic()))
            for ch in (0, 1):
                send(
                    topics["audio"],
                    AudioChunkV1(
                        call_id=call_id,
                        channel=ch,
                        sequence=seq,
                        start_ms=at // 8,
                        audio=encode_g711(channels[ch][at : at + step], "mulaw"),
                        **common,
                    ),
                )
        last = {"0": seq, "1": seq}
        send(topics["calls"], CallEndedV1(call_id=call_id, last_audio_sequence=last, **common))

    threads = []
    for i, (call_id, (channels, _)) in enumerate(calls.items()):
        thread = threading.Thread(target=stream, args=(call_id, channels), daemon=True)
        threads.append(thread)
        thread.start()
        time.sleep(0.37 * (i % 3))  # calls do not all start on the same tick
    pump = threading.Event()

    def flusher() -> None:
        while not pump.is_set():
            with send_lock:
                producer.poll(0.01)
            time.sleep(0.01)

    threading.Thread(target=flusher, daemon=True).start()
    latencies: list[float] = []
    received = 0
    end = time.monotonic() + args.seconds + 120
    while received < expected and time.monotonic() < end:
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        arrived = time.monotonic()
        segment = json.loads(msg.value())
        if segment["call_id"] not in starts:
            continue
        received += 1
        texts[segment["call_id"]].append((segment["start_s"], segment["text"]))
        if segment["flags"] and "max_length_split" in segment["flags"]:
            continue
        latencies.append(arrived - (starts[segment["call_id"]] + segment["end_s"]))
    pump.set()
    for thread in threads:
        thread.join(5)
    producer.flush(10)
    service.terminate()
    service.wait(30)
    consumer.close()
    admin.delete_topics(list(topics.values()))
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    if not latencies:
        print("no segments received", file=sys.stderr)
        return 1
    p50, p95 = np.percentile(latencies, [50, 95])
    import jiwer
    from asr_wer import normalise  # this folder is on sys.path when run as a script

    refs = references()
    truth = [normalise(" ".join(refs[n] for n in said)) for _, said in calls.values()]
    heard = [normalise(" ".join(t for _, t in sorted(texts[c]))) for c in calls]
    beam = os.environ.get("LOOPWISE_TRANSCRIPTION_REALTIME_BEAM_SIZE") or os.environ.get(
        "LOOPWISE_TRANSCRIPTION_BEAM_SIZE", "5 (default)"
    )
    print(f"streaming beam size: {beam}; streamed WER {100 * jiwer.wer(truth, heard):.2f}%")
    if os.environ.get("BENCH_VERBOSE"):
        for t, h in zip(truth, heard, strict=True):
            print(f"  said:  {t}\n  heard: {h}")
    print(
        f"{args.calls} calls x {args.seconds:.0f} s, 2 channels, 8 kHz mu-law, "
        f"{CHUNK_MS} ms chunks: "
        f"{received}/{expected} segments; end of utterance -> segment received: "
        f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies):.2f} s"
    )
    print(f"machine load before: {load_before.strip()}")
    print(f"machine load after:  {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
