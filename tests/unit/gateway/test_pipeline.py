"""The reply pipeline against scripted backends: what is released, when, and what is audited first.

The backends here are small scripted stand-ins (the component under test is the pipeline); the
integration tests run the same flows against the real inference and safety services.
"""

import asyncio
import dataclasses
import time

import pytest

from llamagate.formats.audit import read_records
from services.common.dialog import Message, Role
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.verdicts import Direction
from services.gateway.audit import AuditSink
from services.gateway.backends import (
    FinishReason,
    GenerationRequest,
)
from services.gateway.moderation import ModerationConfig, ModerationMode
from services.gateway.pipeline import (
    Accepted,
    Done,
    PipelineConfig,
    ReplyPipeline,
    ReplyRequest,
    SafetyNotice,
    Text,
)
from services.gateway.sampling import SamplingParams
from tests.unit.gateway.scripted_backends import USER, ScriptedGeneration, ScriptedInference, ScriptedSafety


def request(context=USER) -> ReplyRequest:
    return ReplyRequest("r", "acme", context, GenerationRequest("r", SamplingParams(), dialog=context))


async def run(pipeline: ReplyPipeline, req: ReplyRequest, audit_dir, cancel: asyncio.Event | None = None):
    """Collect events; at every Text, note how many audit records were already on disk."""
    events, audited_at_release = [], []
    async for event in pipeline.run(req, cancel or asyncio.Event()):
        events.append(event)
        if isinstance(event, Text):
            audited_at_release.append(len(list(read_records(audit_dir))))
    return events, audited_at_release


def make(tmp_path, deltas, config=None, **safety):
    config = config or PipelineConfig(moderation=ModerationConfig(chunk_tokens=4))
    inference = ScriptedInference(ScriptedGeneration(deltas))
    safety_backend = ScriptedSafety(**safety)
    return ReplyPipeline(config, inference, safety_backend, AuditSink(tmp_path)), inference, safety_backend


async def test_benign_reply_is_released_chunk_by_chunk_after_each_verdict_is_on_disk(tmp_path):
    pipeline, _, safety = make(tmp_path, ["Once", " upon", " a time.", " The", " end"])
    events, audited = await run(pipeline, request(), tmp_path)
    texts = [e.text for e in events if isinstance(e, Text)]
    assert texts == ["Once upon a time.", " The end"]
    assert isinstance(events[0], Accepted)
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason is FinishReason.STOP and done.completion_tokens == 5
    # input verdict, then one chunk verdict per released chunk, each on disk before its text left.
    assert audited == [2, 3]
    records = list(read_records(tmp_path))
    assert [r["stage"] for r in records] == ["input", "chunk", "chunk", "final"]
    assert safety.checks[-1] == (Direction.OUTPUT, "Once upon a time. The end")


async def test_unsafe_input_is_refused_before_generation(tmp_path):
    pipeline, inference, _ = make(tmp_path, ["never"])
    events, _ = await run(pipeline, request((Message(Role.USER, "how to build a bomb"),)), tmp_path)
    notice, done = events[-2], events[-1]
    assert isinstance(notice, SafetyNotice) and not notice.verdict.safe and notice.refusal
    assert notice.verdict.violated == ("O3",)
    assert done.finish_reason is FinishReason.SAFETY
    assert inference.requests == []
    assert [call.closed for call in inference.calls] == [True]  # opened for the check, never started
    assert [r["verdict"] for r in read_records(tmp_path)] == ["unsafe"]


async def test_generation_call_is_opened_before_the_input_verdict_and_started_after(tmp_path):
    pipeline, inference, safety = make(tmp_path, ["Fine."])
    seen_during_check: list[tuple[int, int]] = []
    judge = safety.check

    async def check(dialog, direction, timeout_s):
        seen_during_check.append((len(inference.calls), len(inference.requests)))
        return await judge(dialog, direction, timeout_s)

    safety.check = check  # type: ignore[method-assign]
    events, _ = await run(pipeline, request(), tmp_path)
    assert seen_during_check[0] == (1, 0)  # the call is open, the dialog not sent yet
    assert len(inference.requests) == 1 and events[-1].finish_reason is FinishReason.STOP


async def test_unsafe_chunk_cancels_generation_and_is_never_released(tmp_path):
    deltas = ["Sure.", " First", " get", " a bomb", " and", " more", " text."]
    pipeline, inference, _ = make(tmp_path, deltas)
    events, _ = await run(pipeline, request(), tmp_path)
    released = "".join(e.text for e in events if isinstance(e, Text))
    assert released == "Sure."
    assert "bomb" not in released
    assert events[-1].finish_reason is FinishReason.SAFETY
    assert inference.generation.cancelled and inference.generation.closed
    assert [r["verdict"] for r in read_records(tmp_path)][-1] == "unsafe"


async def test_safety_outage_mid_reply_fails_closed(tmp_path):
    pipeline, inference, _ = make(tmp_path, ["One.", " Two.", " Three."], down_after_chunks=1)
    released = []
    with pytest.raises(Unavailable):
        async for event in pipeline.run(request(), asyncio.Event()):
            if isinstance(event, Text):
                released.append(event.text)
    assert released == ["One."]
    assert inference.generation.cancelled and inference.generation.closed


async def test_fail_open_releases_unchecked_text_and_audits_it(tmp_path):
    config = PipelineConfig(moderation=ModerationConfig(chunk_tokens=4), fail_open=True)
    pipeline, _, _ = make(tmp_path, ["One.", " Two."], config, down_after_chunks=0)
    events, _ = await run(pipeline, request(), tmp_path)
    assert "".join(e.text for e in events if isinstance(e, Text)) == "One. Two."
    chunks = [r for r in read_records(tmp_path) if r["stage"] == "chunk"]
    assert [r["verdict"] for r in chunks] == ["unchecked", "unchecked"]
    # Nothing was read: no claim about how.
    assert not {"judged_tokens", "judged_segments", "truncated"} & {key for r in chunks for key in r}


async def test_audit_records_say_how_the_classifier_read_each_text(tmp_path):
    pipeline, _, _ = make(tmp_path, ["Once", " upon", " a time.", " The", " end."])
    await run(pipeline, request(), tmp_path)
    read = [
        (r["stage"], r["judged_tokens"], r["judged_segments"], r["truncated"]) for r in read_records(tmp_path)
    ]
    assert read == [
        ("input", 4, 1, False),  # "tell me a story"
        ("chunk", 4, 1, False),  # "Once upon a time."
        ("chunk", 6, 2, False),  # the output so far
        ("final", 6, 2, False),
    ]


async def test_cancel_ends_the_reply_and_the_generation(tmp_path):
    pipeline, inference, _ = make(tmp_path, ["One.", " Two.", " Three."])
    inference.generation.hang_after = 1
    cancel = asyncio.Event()
    events = []
    async for event in pipeline.run(request(), cancel):
        events.append(event)
        if isinstance(event, Text):
            cancel.set()
    assert events[-1].finish_reason is FinishReason.CANCELLED and events[-1].reply_text == "One."
    assert inference.generation.cancelled and inference.generation.closed


async def test_buffer_mode_releases_only_after_the_whole_reply_is_judged(tmp_path):
    config = PipelineConfig(moderation=ModerationConfig(ModerationMode.BUFFER))
    pipeline, _, safety = make(tmp_path, ["One.", " Two.", " a bomb."], config)
    events, _ = await run(pipeline, request(), tmp_path)
    assert not any(isinstance(e, Text) for e in events)
    assert events[-1].finish_reason is FinishReason.SAFETY
    assert safety.chunks == []  # no streaming check: the final check judges the whole reply

    pipeline, _, _ = make(tmp_path / "ok", ["One.", " Two."], config)
    events, audited = await run(pipeline, request(), tmp_path / "ok")
    assert [e.text for e in events if isinstance(e, Text)] == ["One. Two."]
    assert audited == [2]  # input + final verdicts on disk first


async def test_a_generation_the_backend_ends_as_cancelled_still_gets_a_done(tmp_path):
    pipeline, inference, _ = make(tmp_path, ["One.", " Two."])
    inference.generation.cancelled = True  # e.g. the inference service was drained
    events, _ = await run(pipeline, request(), tmp_path)
    assert isinstance(events[-1], Done) and events[-1].finish_reason is FinishReason.CANCELLED


class _SlowSafety(ScriptedSafety):
    """Answers nothing within the time it is given, as the gRPC backend does on a timeout."""

    async def check(self, dialog, direction, timeout_s):
        await asyncio.sleep(timeout_s)
        raise Unavailable(f"the safety service did not answer within {timeout_s:.3f}s")


@pytest.mark.parametrize(
    ("safety_timeout_s", "deadline_in_s", "error"),
    [
        (5.0, 0.05, DeadlineExceeded),  # the client's deadline cut the check
        (0.05, 30.0, Unavailable),  # the safety timeout did
    ],
)
async def test_a_check_cut_short_names_what_cut_it(tmp_path, safety_timeout_s, deadline_in_s, error):
    config = PipelineConfig(moderation=ModerationConfig(chunk_tokens=4), safety_timeout_s=safety_timeout_s)
    pipeline = ReplyPipeline(
        config, ScriptedInference(ScriptedGeneration(["One."])), _SlowSafety(), AuditSink(tmp_path)
    )
    req = dataclasses.replace(request(), deadline=time.monotonic() + deadline_in_s)
    with pytest.raises(error):
        async for _ in pipeline.run(req, asyncio.Event()):
            pass


async def test_each_stage_of_a_reply_is_timed(tmp_path):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from services.gateway.metrics import GatewayMetrics
    from tests.unit.telemetry.readings import collect, labels

    reader = InMemoryMetricReader()
    metrics = GatewayMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("t"))
    inference = ScriptedInference(ScriptedGeneration(["Once", " upon", " a time.", " The", " end"]))
    pipeline = ReplyPipeline(
        PipelineConfig(moderation=ModerationConfig(chunk_tokens=4)),
        inference,
        ScriptedSafety(),
        AuditSink(tmp_path),
        metrics=metrics,
    )
    await run(pipeline, request(), tmp_path)
    stages = collect(reader)["llamagate_gateway_stage_seconds"]
    # One input check, two chunks, one final check; a record for each; one first token.
    checks = ("input_check", "first_chunk_check", "chunk_check", "final_check")
    counts = {stage: stages[labels(stage=stage)].value for stage in checks}
    assert counts == {"input_check": 1, "first_chunk_check": 1, "chunk_check": 1, "final_check": 1}
    assert stages[labels(stage="audit_write")].value == 4
    assert stages[labels(stage="first_token")].value == 1
    assert all(point.total >= 0 for point in stages.values())
