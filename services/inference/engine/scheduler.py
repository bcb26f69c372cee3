"""Continuous batching: which sequences run in the next engine step, and with which KV blocks.

Sequences wait in a bounded queue, are admitted while the batch has room and the KV cache has
free blocks for their prompt, prefill in chunks of at most `prefill_chunk` tokens, then decode one
token per step. When a prefill is pending while others decode, prefill and decode steps alternate,
so a long prompt delays running streams by one chunk at a time, never by its whole length. When a
decode needs a block and none is free, the most recently admitted sequence is preempted: its blocks
are freed and it is recomputed later from its tokens (sampling is a pure function of seed and step,
so it continues exactly where it stopped). Pure Python on one thread: no torch, no gRPC.

With prefix caching on, every full block is registered in the allocator's prefix cache once its
tokens are known, and an admitted sequence takes the cached blocks of its longest cached prefix and
prefills only the rest: its first chunk starts at a block boundary, with those blocks already in
its table. The block holding the last token is never taken from the cache (its logits pick the next
token, so it is computed), so no step ever writes into a block another sequence shares. The plan
carries the block tables, so every rank uses the blocks rank 0 picked.

Bookkeeping advances when a step is *planned*, not when its tokens come back: a row that samples
leaves a token in flight (`Sequence.pending`), and the next decode step can be planned and started
before that token is known. Such a row's input token is -1 and the runner reads it from the device,
where the previous step left it in the row's batch slot. So the host plans step N+1 while the GPU
still runs step N; a sequence that turns out to have ended (EOS, stop string) wastes one row.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from services.common.errors import Overloaded
from services.inference.engine.blocks import BlockAllocator, blocks_for
from services.inference.engine.config import EngineConfig
from services.inference.engine.prefix_hash import extend_hashes
from services.inference.engine.request import FinishReason, GenerationRequest
from services.inference.engine.step_plan import StepPlan, StepRow


class Phase(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    # Longest total length (prompt + generated) this request may reach.
    max_len: int
    tokens: list[int] = field(default_factory=list)
    # Tokens whose keys/values are in the cache.
    num_computed: int = 0
    blocks: list[int] = field(default_factory=list)
    phase: Phase = Phase.WAITING
    echo_pending: bool = False
    # Tokens planned (sampled or about to be) but not yet read back: they follow `tokens`.
    pending: int = 0
    # Row of the runner's on-device token buffer that holds this sequence's latest sampled token.
    batch_slot: int = -1
    # Prefix-cache hashes of the first full blocks of `tokens` (extended as they are needed).
    block_hashes: list[bytes] = field(default_factory=list)
    # Leading blocks of `blocks` that are in the prefix cache (taken from it or registered).
    num_cached_blocks: int = 0
    # Prompt tokens whose keys/values came from the prefix cache at first admission (usage).
    cached_prompt_tokens: int = 0
    # Admitted once already: a preempted sequence's readmission is not a new prompt lookup.
    admitted: bool = False

    @property
    def scheduled_len(self) -> int:
        """Length once every planned token is known: what the next step's positions follow."""
        return len(self.tokens) + self.pending

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass(frozen=True)
class ScheduledStep:
    """A planned step: the plan every rank runs, and the sequence behind each of its rows (rank 0's
    bookkeeping, never broadcast)."""

    plan: StepPlan
    sequences: list[Sequence]


@dataclass(frozen=True)
class SequenceUpdate:
    """What one step did to one sequence: its new token (None mid-prefill), echo logprobs if asked."""

    sequence: Sequence
    token: int | None
    logprob: float
    echo_logprobs: list[float] | None = None


@dataclass(frozen=True)
class SchedulerStats:
    waiting: int
    prefilling: int
    decoding: int
    free_blocks: int
    total_blocks: int
    preemptions: int
    # Prefix cache: blocks registered, blocks evicted, and prompt tokens of admitted requests
    # looked up / served from the cache (their ratio is the hit rate).
    cached_blocks: int = 0
    evictions: int = 0
    prompt_tokens_looked_up: int = 0
    prompt_tokens_cached: int = 0


def check_queue_room(waiting: int, max_queue: int) -> None:
    """Overloaded when `waiting` requests already wait for admission (the --max-queue rule)."""
    if waiting >= max_queue:
        raise Overloaded(
            f"the inference queue is full ({waiting} requests waiting, --max-queue {max_queue}); retry later",
            retry_after_s=1.0,
        )


class Scheduler:
    def __init__(self, config: EngineConfig, allocator: BlockAllocator, eos_id: int) -> None:
        self.config = config
        self.allocator = allocator
        self.eos_id = eos_id
        self.block_size = config.kv_block_size
        self.waiting: deque[Sequence] = deque()
        self.prefilling: list[Sequence] = []
        self.decoding: list[Sequence] = []
        self._last_was_decode = False
        self.preemptions = 0
        self.prompt_tokens_looked_up = 0
        self.prompt_tokens_cached = 0
        # Batch slots of the runner's token buffer not held by an admitted sequence.
        self._free_batch_slots = list(range(config.max_batch_size - 1, -1, -1))

    # -- admission -------------------------------------------------------------------------

    def add(self, request: GenerationRequest) -> Sequence:
        """Queue a request; Overloaded when the queue is full or it can never fit the cache."""
        check_queue_room(len(self.waiting), self.config.max_queue)
        prompt_len = len(request.prompt_ids)
        max_gen = request.params.max_gen_len or self.config.max_seq_len
        max_len = min(prompt_len + max_gen, self.config.max_seq_len)
        needed = blocks_for(max_len, self.block_size)
        if needed > self.allocator.usable_blocks:
            raise Overloaded(
                f"this request needs up to {max_len} tokens = {needed} KV blocks but the whole cache has "
                f"{self.allocator.usable_blocks}; lower max_gen_len or the prompt length, or give the "
                "server more KV memory (--num-kv-blocks / --gpu-memory-utilization)"
            )
        sequence = Sequence(request=request, max_len=max_len, tokens=list(request.prompt_ids))
        sequence.echo_pending = request.echo
        self.waiting.append(sequence)
        return sequence

    def _admit(self) -> None:
        while self.waiting and len(self.prefilling) + len(self.decoding) < self.config.max_batch_size:
            sequence = self.waiting[0]
            if sequence.pending:  # preempted with a token in flight: its prompt is not complete yet
                return
            hits = self._cached_prefix(sequence)
            fresh_blocks = blocks_for(len(sequence.tokens), self.block_size) - len(hits)
            # Unreferenced cached blocks count as free until a sequence takes them.
            needed = fresh_blocks + sum(1 for block in hits if not self.allocator.referenced(block))
            # One block of headroom so the first decode step of what runs does not preempt at once.
            if self.allocator.num_free < needed + 1 and (self.prefilling or self.decoding):
                return
            if self.allocator.num_free < needed:
                return
            self.waiting.popleft()
            self.allocator.acquire(hits)
            sequence.blocks = hits + self.allocator.allocate(fresh_blocks)
            sequence.batch_slot = self._free_batch_slots.pop()
            sequence.num_computed = len(hits) * self.block_size
            sequence.num_cached_blocks = len(hits)
            if not sequence.admitted:
                sequence.admitted = True
                sequence.cached_prompt_tokens = sequence.num_computed
                if self.config.prefix_caching:
                    self.prompt_tokens_looked_up += sequence.prompt_len
                    self.prompt_tokens_cached += sequence.num_computed
            sequence.phase = Phase.PREFILL
            self.prefilling.append(sequence)

    def _cached_prefix(self, sequence: Sequence) -> list[int]:
        """Cached blocks `sequence` can start from: its longest cached prefix of full blocks that
        stops before its last token (computed for its logits). None for a request that scores its
        prompt (echo logprobs need every position's logits)."""
        if not self.config.prefix_caching or sequence.echo_pending:
            return []
        extend_hashes(sequence.block_hashes, sequence.tokens, self.block_size)
        usable = (len(sequence.tokens) - 1) // self.block_size
        return self.allocator.lookup(sequence.block_hashes[:usable])

    def _cache_full_blocks(self, sequence: Sequence) -> None:
        """Register the blocks of `sequence` that are full of known tokens (their keys/values are
        written by a step planned already; any reader's step runs after it)."""
        if not self.config.prefix_caching:
            return
        full = min(sequence.num_computed, len(sequence.tokens)) // self.block_size
        if full <= sequence.num_cached_blocks:
            return
        extend_hashes(sequence.block_hashes, sequence.tokens, self.block_size, blocks=full)
        for index in range(sequence.num_cached_blocks, full):
            self.allocator.register(sequence.blocks[index], sequence.block_hashes[index])
        sequence.num_cached_blocks = full

    # -- leaving ---------------------------------------------------------------------------

    def release(self, sequence: Sequence) -> None:
        """Remove a sequence wherever it is and return its blocks to the pool."""
        if sequence.phase is Phase.WAITING and sequence in self.waiting:
            self.waiting.remove(sequence)
        elif sequence in self.prefilling:
            self.prefilling.remove(sequence)
        elif sequence in self.decoding:
            self.decoding.remove(sequence)
        self._free_blocks_and_slot(sequence)
        sequence.phase = Phase.FINISHED

    def _free_blocks_and_slot(self, sequence: Sequence) -> None:
        # A step in flight may still write these blocks and this slot; any later owner's step runs
        # after it on the same device stream, so the reuse is safe. Tail first: see free().
        self.allocator.free(sequence.blocks[::-1])
        sequence.blocks = []
        if sequence.batch_slot >= 0:
            self._free_batch_slots.append(sequence.batch_slot)
            sequence.batch_slot = -1

    def _preempt(self, sequence: Sequence) -> None:
        if sequence in self.decoding:
            self.decoding.remove(sequence)
        else:
            self.prefilling.remove(sequence)
        self._free_blocks_and_slot(sequence)
        sequence.num_computed = 0
        sequence.phase = Phase.WAITING
        self.waiting.appendleft(sequence)
        self.preemptions += 1

    # -- planning --------------------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding)

    def schedule(self) -> ScheduledStep | None:
        """Plan the next step and advance the bookkeeping as if it ran (see the module doc)."""
        self._admit()
        # Decode and prefill take turns while both have work.
        if self.decoding and not (self.prefilling and self._last_was_decode):
            step = self._decode_step()
            if step is not None:
                self._last_was_decode = True
                return step
            # Nothing to decode (all preempted, or only waiting for tokens in flight).
            self._admit()
        if self.prefilling:
            self._last_was_decode = False
            return self._prefill_step()
        return None

    def _slot(self, sequence: Sequence, position: int) -> int:
        return sequence.blocks[position // self.block_size] * self.block_size + position % self.block_size

    def _prefill_step(self) -> ScheduledStep:
        budget = self.config.prefill_chunk
        chunks: list[tuple[Sequence, int]] = []
        width = 0
        for sequence in self.prefilling:
            chunk = min(len(sequence.tokens) - sequence.num_computed, budget)
            new_width = max(width, chunk)
            # Rows are padded to the widest chunk: the padded batch must fit the budget.
            if chunks and (len(chunks) + 1) * new_width > budget:
                break
            chunks.append((sequence, chunk))
            width = new_width
        rows = []
        for sequence, chunk in chunks:
            start = sequence.num_computed
            positions = list(range(start, start + chunk))
            echo = None
            if sequence.echo_pending:
                echo = sequence.tokens[start + 1 : min(start + chunk + 1, sequence.prompt_len)]
            rows.append(
                self._row(
                    sequence,
                    tokens=sequence.tokens[start : start + chunk],
                    positions=positions,
                    sample_index=chunk - 1,
                    samples=start + chunk == len(sequence.tokens),
                    echo_targets=echo,
                )
            )
        plan = StepPlan(decode=False, fresh=all(s.num_computed == 0 for s, _ in chunks), rows=rows)
        for sequence, chunk in chunks:
            sequence.num_computed += chunk
            self._cache_full_blocks(sequence)
            if sequence.num_computed == len(sequence.tokens):
                self._sampled(sequence)
        return ScheduledStep(plan, [sequence for sequence, _ in chunks])

    def _decode_step(self) -> ScheduledStep | None:
        # Grow block tables first; preempt the newest sequences when the pool runs dry.
        for sequence in list(self.decoding):
            if sequence not in self.decoding:
                continue
            while len(sequence.blocks) < blocks_for(sequence.scheduled_len, self.block_size):
                if self.allocator.num_free > 0:
                    sequence.blocks += self.allocator.allocate(1)
                    continue
                victim = (self.prefilling or self.decoding)[-1]
                self._preempt(victim)
                if victim is sequence:
                    break
        # A sequence whose planned tokens already reach its limit only waits for them to come back.
        sequences = [s for s in self.decoding if s.scheduled_len < s.max_len]
        if not sequences:
            return None
        rows = []
        for sequence in sequences:
            position = sequence.scheduled_len - 1
            token = -1 if sequence.pending else sequence.tokens[-1]
            rows.append(
                self._row(sequence, tokens=[token], positions=[position], sample_index=0, samples=True)
            )
        for sequence in sequences:
            sequence.num_computed += 1
            self._sampled(sequence)
        return ScheduledStep(StepPlan(decode=True, fresh=False, rows=rows), sequences)

    def _row(
        self,
        sequence: Sequence,
        *,
        tokens: list[int],
        positions: list[int],
        sample_index: int,
        samples: bool,
        echo_targets: list[int] | None = None,
    ) -> StepRow:
        """`sequence`'s row, planned before its bookkeeping advances."""
        params = sequence.request.params
        return StepRow(
            tokens=tokens,
            positions=positions,
            slots=[self._slot(sequence, p) for p in positions],
            block_table=list(sequence.blocks),
            context_len=positions[-1] + 1,
            sample_index=sample_index,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=sequence.request.seed,
            step=sequence.scheduled_len - sequence.prompt_len,
            batch_slot=sequence.batch_slot,
            samples=samples,
            echo_targets=echo_targets,
        )

    def _sampled(self, sequence: Sequence) -> None:
        """The planned step samples `sequence`'s next token: it is in flight until `apply`."""
        sequence.pending += 1
        if sequence.phase is Phase.PREFILL:
            self.prefilling.remove(sequence)
            self.decoding.append(sequence)
            sequence.phase = Phase.DECODE

    # -- results ---------------------------------------------------------------------------

    def apply(
        self,
        step: ScheduledStep,
        tokens: list[int],
        logprobs: list[float],
        echo_logprobs: dict[int, list[float]],
    ) -> list[SequenceUpdate]:
        """Record a step's sampled tokens. Rows of sequences released since it was planned are dropped."""
        updates = []
        for i, (sequence, row) in enumerate(zip(step.sequences, step.plan.rows, strict=True)):
            if sequence.phase is Phase.FINISHED:
                continue
            echo = echo_logprobs.get(i)
            if not row.samples:
                updates.append(SequenceUpdate(sequence, None, 0.0, echo))
                continue
            # A preempted sequence (WAITING) keeps its token: it was drawn at the right step.
            sequence.pending -= 1
            sequence.tokens.append(tokens[i])
            if sequence.phase is Phase.DECODE:
                self._cache_full_blocks(sequence)
            updates.append(SequenceUpdate(sequence, tokens[i], logprobs[i], echo))
        return updates

    def finish_reason(self, sequence: Sequence) -> FinishReason | None:
        """EOS -> STOP; max_gen_len or max_seq_len -> LENGTH (stop strings are the engine's)."""
        if (
            sequence.num_generated > 0
            and sequence.tokens[-1] == self.eos_id
            and not sequence.request.params.ignore_eos
        ):
            return FinishReason.STOP
        if len(sequence.tokens) >= sequence.max_len:
            return FinishReason.LENGTH
        return None

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            waiting=len(self.waiting),
            prefilling=len(self.prefilling),
            decoding=len(self.decoding),
            free_blocks=self.allocator.num_free,
            total_blocks=self.allocator.usable_blocks,
            preemptions=self.preemptions,
            cached_blocks=self.allocator.num_cached,
            evictions=self.allocator.evictions,
            prompt_tokens_looked_up=self.prompt_tokens_looked_up,
            prompt_tokens_cached=self.prompt_tokens_cached,
        )
