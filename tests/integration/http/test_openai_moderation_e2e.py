"""Output moderation over HTTP, with the scripted model of the gRPC moderation tests: its reply
starts benign and turns unsafe in its second sentence, followed by filler tokens. The unsafe
sentence never reaches the client, streaming or not, and the generation is cancelled."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from llamagate.formats.audit import AuditFilter, read_records
from tests.integration.gateway.chat_session import finished_line
from tests.integration.gateway.scripted_model import write_scripted_checkpoint
from tests.support.stack import Stack, StackConfig, demo_model, require_services, running_stack

pytestmark = pytest.mark.slow

BENIGN = "Once upon a time there was a garden."
UNSAFE = "Murder everyone with knives and stab them dead."
MODEL = "llama-2-chat"
STORY = [{"role": "user", "content": "Tell me a story about a garden."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_services()
    demo_ckpt, tokenizer = demo_model()
    scripted = tmp_path_factory.mktemp("scripted-model")
    write_scripted_checkpoint(demo_ckpt, tokenizer, scripted, f"{BENIGN} {UNSAFE}", filler_tokens=400)
    config = StackConfig(
        ckpt_dir=scripted,
        tokenizer_path=scripted / "tokenizer.model",
        # Chunks end at sentence boundaries (never at the token cap) and the judged text is kept.
        gateway_args=("--chunk-tokens", "64", "--audit-text"),
    )
    with running_stack(tmp_path_factory.mktemp("http-moderation-stack"), config) as stack:
        yield stack


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.http_base_url, api_key=stack.api_key, max_retries=0, timeout=120)


def test_output_that_turns_unsafe_is_stopped_mid_stream(stack: Stack):
    chunks = list(
        client(stack).chat.completions.create(model=MODEL, messages=STORY, temperature=0, stream=True)
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts).strip() == BENIGN
    assert not any("Murder" in text for text in texts)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "content_filter" and last.delta.refusal
    safety = last.model_extra["safety"]  # type: ignore[index]
    assert safety["direction"] == "output" and [c["code"] for c in safety["categories"]] == ["O1"]
    request_id = chunks[0].id.split("-", 1)[1]
    # Cancelled on the inference service long before its 400 filler tokens.
    assert finished_line(stack, request_id) == "cancelled"
    records = list(read_records(stack.audit_dir, AuditFilter(request_id=request_id)))
    assert [(r["stage"], r["verdict"]) for r in records] == [
        ("input", "safe"),
        ("chunk", "safe"),
        ("chunk", "unsafe"),
    ]
    assert UNSAFE in records[-1]["text"]


def test_unsafe_text_is_not_on_the_wire_at_all(stack: Stack):
    """The raw SSE bytes, not just what the client library parses, hold none of the unsafe sentence."""
    body = {"model": MODEL, "messages": STORY, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST",
        f"{stack.http_base_url}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {stack.api_key}"},
        timeout=120,
    ) as response:
        wire = b"".join(response.iter_bytes())
    assert b"Murder" not in wire and b"stab" not in wire
    assert b'"finish_reason":"content_filter"' in wire and wire.endswith(b"data: [DONE]\n\n")


def test_non_streaming_reply_keeps_only_the_checked_text(stack: Stack):
    completion = client(stack).chat.completions.create(model=MODEL, messages=STORY, temperature=0)
    [choice] = completion.choices
    assert choice.finish_reason == "content_filter"
    assert choice.message.content is not None and choice.message.content.strip() == BENIGN
    assert choice.message.refusal
    assert completion.usage is not None and completion.usage.completion_tokens < 100
