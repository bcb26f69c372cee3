"""The reference-style generator on a demo-shaped model (random weights, the demo tokenizer): KV
cache, batching, echo, logprobs, EOS."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from services.common.dialog import Message, Role
from services.common.errors import InvalidRequest
from services.common.sampling import SamplingParams
from services.inference.demo import DEMO_ARGS
from services.inference.model.generation import Llama
from services.inference.model.tokenizer import Tokenizer
from tests.support.models import CPU_MP1, random_model

GREEDY = SamplingParams(temperature=0.0, max_gen_len=12)


@pytest.fixture(scope="module")
def llama(tokenizer: Tokenizer) -> Llama:
    return Llama(
        random_model(replace(DEMO_ARGS, max_seq_len=96), seed=3), tokenizer, CPU_MP1, max_batch_size=4
    )


def _greedy_without_cache(llama: Llama, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(llama.model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def test_cached_batched_greedy_equals_full_recompute(llama: Llama) -> None:
    prompts = [
        llama.tokenizer.encode(t, bos=True, eos=False) for t in ["Hi", "The old clock in the station hall"]
    ]
    generated, _ = llama.generate(prompts, GREEDY)
    for prompt, ids in zip(prompts, generated, strict=True):
        expected = _greedy_without_cache(llama, prompt, 12)
        if llama.tokenizer.eos_id in expected:
            expected = expected[: expected.index(llama.tokenizer.eos_id)]
        assert ids == expected


def test_sampled_rows_do_not_depend_on_their_batch(llama: Llama) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.95, max_gen_len=10)
    a = llama.tokenizer.encode("Bees visit about a hundred flowers", bos=True, eos=False)
    b = llama.tokenizer.encode("Fog", bos=True, eos=False)
    alone, _ = llama.generate([a], params, seeds=[42])
    together, _ = llama.generate([b, a, b], params, seeds=[7, 42, 8])
    assert together[1] == alone[0]
    assert together[0] != together[2] or together[0] == []  # different seeds, different draws


def test_echo_and_logprobs_match_a_full_forward(llama: Llama) -> None:
    params = SamplingParams(temperature=0.0, max_gen_len=6, logprobs=True)
    [prediction] = llama.text_completion(["A bridge is a promise"], params, echo=True)
    prompt = llama.tokenizer.encode("A bridge is a promise", bos=True, eos=False)
    ids, _ = llama.generate([prompt], params, echo=True)
    assert ids[0][: len(prompt)] == prompt and len(ids[0]) == len(prompt) + 6
    assert prediction.logprobs is not None and prediction.tokens is not None
    assert len(prediction.logprobs) == len(prediction.tokens) == len(ids[0])
    with torch.no_grad():
        logprobs = torch.log_softmax(llama.model(torch.tensor([ids[0]])), -1)[0]
    expected = [0.0] + [logprobs[i - 1, ids[0][i]].item() for i in range(1, len(ids[0]))]
    assert prediction.logprobs == pytest.approx(expected, abs=1e-4)


def test_generation_stops_at_eos(llama: Llama) -> None:
    eos = llama.tokenizer.eos_id

    def prefer_eos(module: torch.nn.Module, inputs: object, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., eos] += 1e4
        return logits

    handle = llama.model.output.register_forward_hook(prefer_eos)
    try:
        [chat] = llama.chat_completion([[Message(Role.USER, "Hello")]], SamplingParams(temperature=0.7))
        [text] = llama.text_completion(["Hello"], SamplingParams(temperature=0.0), echo=True)
    finally:
        handle.remove()
    assert chat.generation == Message(Role.ASSISTANT, "")
    assert text.generation == "Hello"


def test_max_gen_len_defaults_to_the_context(llama: Llama) -> None:
    [ids], _ = llama.generate([[llama.tokenizer.bos_id] * 90], SamplingParams(temperature=0.0))
    assert len(ids) <= 96 - 90


@pytest.mark.parametrize(
    ("prompts", "match"),
    [([[1] * 97], "1 to 96 tokens"), ([[]], "1 to 96 tokens"), ([[1]] * 5, "send 1 to 4")],
)
def test_bad_batches_are_refused(llama: Llama, prompts: list[list[int]], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        llama.generate(prompts, GREEDY)
