"""One-row prefill chunks replayed as CUDA graphs: which steps take a graph, and that the padded step
a graph captures gives the tokens and cache of the step itself.

The CPU has no graphs, so there the captured body (`ModelRunner.chunk_step` on the static inputs
`stage_chunk` fills) runs eagerly in place of the replay: padding, the full-width block table and
the static inputs are what these tests check. On a GPU the same chats run through real replays.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from services.inference.config import parse_config
from services.inference.engine.blocks import PAD_SLOT
from services.inference.engine.runner import ModelRunner, PendingStep, chunk_graph_length
from services.inference.engine.scheduler import Scheduler
from services.inference.engine.step_plan import StepPlan, StepRow
from services.inference.model.transformer import Transformer, init_random_weights
from tests.unit.engine.conversations import Chat, greedy_reference, run_chats
from tests.unit.engine.stepping import ARGS, tiny_runner

LENGTHS = (4, 8)  # chunks of at most 7 tokens (tiny_runner), so every one-row prefill fits one
SYSTEM = [1, 11, 12, 13, 14, 15, 16, 17, 18, 19]


def row(tokens: int, start: int = 0, echo: bool = False) -> StepRow:
    return StepRow(
        tokens=[3] * tokens,
        positions=list(range(start, start + tokens)),
        slots=[PAD_SLOT] * tokens,
        block_table=[0],
        context_len=start + tokens,
        sample_index=tokens - 1,
        temperature=0.0,
        top_p=1.0,
        seed=0,
        step=0,
        batch_slot=0,
        samples=True,
        echo_targets=[3] * tokens if echo else None,
    )


def test_one_row_prefill_steps_take_the_shortest_length_that_fits() -> None:
    prefill = [StepPlan(decode=False, fresh=False, rows=[row(n, start=8)]) for n in (1, 4, 5, 8, 9)]
    assert [chunk_graph_length(plan, LENGTHS) for plan in prefill] == [4, 4, 8, 8, None]
    assert chunk_graph_length(StepPlan(decode=False, fresh=True, rows=[row(3)]), LENGTHS) == 4
    assert chunk_graph_length(StepPlan(decode=False, fresh=True, rows=[row(3)]), ()) is None
    # Several rows, decode steps and echoed prompt logprobs run eagerly.
    assert chunk_graph_length(StepPlan(decode=False, fresh=True, rows=[row(3), row(2)]), LENGTHS) is None
    assert chunk_graph_length(StepPlan(decode=True, fresh=False, rows=[row(1, start=5)]), LENGTHS) is None
    assert chunk_graph_length(StepPlan(decode=False, fresh=True, rows=[row(3, echo=True)]), LENGTHS) is None


class PaddedChunks:
    """Launches like a runner with chunk graphs, the captured body run eagerly instead of replayed;
    counts the steps that went each way."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        runner.prepare_chunk_inputs()
        self.padded = {True: 0, False: 0}  # by fresh
        self.eager = 0

    def launch(self, plan: StepPlan) -> PendingStep:
        length = chunk_graph_length(plan, self.runner.chunk_lengths)
        if length is None:
            self.eager += 1
            return self.runner.launch(plan)
        self.padded[plan.fresh] += 1
        with torch.inference_mode():
            self.runner.stage_chunk(plan, length)
            return PendingStep(self.runner.chunk_step(length, plan.fresh, plan.greedy), {})


@pytest.fixture(scope="module")
def model() -> Transformer:
    model = Transformer(ARGS)
    init_random_weights(model, 4)
    return model.eval()


def chats() -> list[Chat]:
    # Turn prompts grow past a block per turn; the second chat shares the first's system prompt.
    return [
        Chat([[*SYSTEM, 20, 21], [22, 23, 24], [25]], max_gen_len=5),
        Chat([[*SYSTEM, 30], [31, 32, 33, 34, 35, 36]], max_gen_len=4, start_step=3),
        Chat([[1, 40, 41, 42, 43]], max_gen_len=6, start_step=1),
    ]


def test_padded_chunks_give_the_unpadded_tokens_and_free_every_block(model: Transformer) -> None:
    config, allocator, runner = tiny_runner(model, num_blocks=48)
    config = replace(config, chunk_graph_tokens=LENGTHS)
    runner = ModelRunner(model, runner.storage, config, max_blocks_per_seq=32)
    padded = PaddedChunks(runner)
    scheduler = Scheduler(config, allocator, eos_id=-1)
    conversations = chats()
    run_chats(scheduler, padded.launch, conversations)
    # Fresh prompts, chunks continuing a cached prefix and eager steps all ran.
    assert padded.padded[True] > 0 and padded.padded[False] > 0 and padded.eager > 0
    assert scheduler.prompt_tokens_cached > 0
    for chat in conversations:
        for turn in chat.turns:
            prompt_len = len(turn.tokens) - chat.max_gen_len
            assert list(turn.tokens) == greedy_reference(
                model, list(turn.tokens[:prompt_len]), chat.max_gen_len
            )
    assert allocator.num_free == allocator.usable_blocks


def test_no_chunk_is_padded_past_the_models_context(model: Transformer) -> None:
    config, _, runner = tiny_runner(model, num_blocks=8)  # max_seq_len 128
    runner = ModelRunner(model, runner.storage, replace(config, chunk_graph_tokens=(8, 128, 256)), 32)
    runner.prepare_chunk_inputs()
    assert runner.chunk_lengths == [8, 128]


def test_a_padded_chunk_writes_the_cache_of_the_unpadded_one(model: Transformer) -> None:
    """Same sampled token and logprob (seeded top-p), and the same keys/values in every real slot;
    the padding writes the reserved block only."""
    _, _, runner = tiny_runner(model, num_blocks=16)
    runner = ModelRunner(model, runner.storage, replace(runner.config, chunk_graph_tokens=(8,)), 32)
    runner.prepare_chunk_inputs()
    block = runner.storage.block_size
    prefix = replace(
        row(8),
        tokens=list(range(1, 9)),
        slots=list(range(block, 3 * block)),  # blocks 1 and 2
        block_table=[1, 2],
    )
    chunk = replace(
        row(3, start=8),
        tokens=[30, 31, 32],
        slots=list(range(3 * block, 3 * block + 3)),  # block 3
        block_table=[1, 2, 3],
        temperature=0.8,
        top_p=0.9,
        seed=7,
    )
    runner.run(StepPlan(decode=False, fresh=True, rows=[prefix]))
    plan = StepPlan(decode=False, fresh=False, rows=[chunk])
    before = runner.storage.k.clone(), runner.storage.v.clone()
    eager = runner.run(plan)
    eager_cache = runner.storage.k.clone(), runner.storage.v.clone()
    runner.storage.k.copy_(before[0])
    runner.storage.v.copy_(before[1])
    with torch.inference_mode():
        runner.stage_chunk(plan, 8)
        padded = PendingStep(runner.chunk_step(8, fresh=False, greedy=False), {}).result()
    assert padded.tokens == eager.tokens
    assert padded.logprobs == pytest.approx(eager.logprobs, abs=1e-5)
    for got, want in zip((runner.storage.k, runner.storage.v), eager_cache, strict=True):
        torch.testing.assert_close(got[:, 1:], want[:, 1:])  # block 0 is the reserved one


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_replayed_chunk_graphs_give_the_tokens_of_eager_prefill(model: Transformer) -> None:
    cuda_model = Transformer(ARGS)
    cuda_model.load_state_dict(model.state_dict())
    cuda_model = cuda_model.cuda().eval()

    def tokens_of(lengths: tuple[int, ...]) -> tuple[list[list[int]], int]:
        config, allocator, runner = tiny_runner(cuda_model, num_blocks=48, device="cuda")
        config = replace(config, chunk_graph_tokens=lengths, graph_sizes=(1, 2, 4))
        runner = ModelRunner(cuda_model, runner.storage, config, max_blocks_per_seq=32)
        runner.capture()
        replays = 0
        replay = runner._launch_chunk_graph

        def counted(plan: StepPlan, length: int) -> PendingStep:
            nonlocal replays
            replays += 1
            return replay(plan, length)

        runner._launch_chunk_graph = counted  # type: ignore[method-assign]
        scheduler = Scheduler(config, allocator, eos_id=-1)
        conversations = chats()
        run_chats(scheduler, runner.launch, conversations)
        assert allocator.num_free == allocator.usable_blocks
        return [list(turn.tokens) for chat in conversations for turn in chat.turns], replays

    graphed, replays = tokens_of(LENGTHS)
    eager, none = tokens_of(())
    assert replays > 0 and none == 0
    assert graphed == eager


def test_the_chunk_graph_lengths_flag() -> None:
    required = ["--ckpt-dir", "ckpt", "--tokenizer-path", "tok.model", "--device", "cpu"]
    assert parse_config(required).engine.chunk_graph_tokens == (16, 32, 64, 128)
    # A shorter --prefill-chunk or --max-seq-len leaves the default valid: chunks pad up to the next
    # length, and lengths past the context are not captured.
    assert parse_config([*required, "--prefill-chunk", "48"]).engine.chunk_graph_tokens == (16, 32, 64, 128)
    assert parse_config([*required, "--max-seq-len", "64"]).engine.chunk_graph_tokens == (16, 32, 64, 128)
    assert parse_config([*required, "--chunk-graph-tokens", "64,8,64"]).engine.chunk_graph_tokens == (8, 64)
    assert parse_config([*required, "--chunk-graph-tokens", "none"]).engine.chunk_graph_tokens == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [("16,x", "comma-separated token counts or 'none'"), ("0,16", "--chunk-graph-tokens must be >= 1")],
)
def test_bad_chunk_graph_lengths_are_refused_with_what_to_pass(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    required = ["--ckpt-dir", "ckpt", "--tokenizer-path", "tok.model", "--device", "cpu"]
    with pytest.raises(SystemExit):
        parse_config([*required, "--chunk-graph-tokens", value])
    assert message in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_failed_chunk_capture_leaves_prefill_eager(
    model: Transformer, caplog: pytest.LogCaptureFixture
) -> None:
    cuda_model = Transformer(ARGS)
    cuda_model.load_state_dict(model.state_dict())
    cuda_model = cuda_model.cuda().eval()
    config, allocator, runner = tiny_runner(cuda_model, num_blocks=48, device="cuda")
    config = replace(config, chunk_graph_tokens=LENGTHS, graph_sizes=(1, 2, 4))
    runner = ModelRunner(cuda_model, runner.storage, config, max_blocks_per_seq=32)

    def broken(length: int, fresh: bool, greedy: bool) -> torch.Tensor:
        raise RuntimeError("capture refused")

    runner.chunk_step = broken  # type: ignore[method-assign]
    runner.capture()
    assert runner.chunk_lengths == [] and "prefill steps run eagerly" in caplog.text
    scheduler = Scheduler(config, allocator, eos_id=-1)
    conversations = chats()
    run_chats(scheduler, runner.launch, conversations)
    assert allocator.num_free == allocator.usable_blocks
