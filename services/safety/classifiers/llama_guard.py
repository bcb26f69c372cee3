"""Llama Guard as a classifier: a causal LM that answers "safe" / "unsafe\\nS1,S3" to its prompt.

Releases 1, 2 and 3 differ in prompt and taxonomy (llama_guard_format.py); the generation and the
answer are the same. Score: the probability of "unsafe" as the answer's first word (the model
cards' way to get a tunable threshold); every category the model lists gets that score and counts
as flagged. A judged turn too long for the window is judged in pieces (llama_guard_fit.py) and the
item gets the worst of their answers: the highest score per category, the union of the flags.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.dialog import Message, Role
from services.safety.classifiers.base import Classifier
from services.safety.classifiers.llama_guard_fit import MIN_PIECE_TOKENS, Plan, plan_prompts
from services.safety.classifiers.llama_guard_format import check_policy, choose_format
from services.safety.classifiers.llama_guard_prompt import parse_assessment
from services.safety.device import CPU
from services.safety.head import file_version
from services.safety.policy import Policy, PolicyError
from services.safety.verdict import CheckItem, Judgement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaGuardConfig:
    model_dir: Path
    # 1, 2 or 3: the release the checkpoint is, which fixes its prompt and taxonomy.
    version: int = 1
    max_new_tokens: int = 20
    # Prompt budget; None: the model's max_position_embeddings less max_new_tokens.
    window: int | None = None
    # Tokens neighbouring pieces of a long judged turn share.
    overlap: int = 128
    # Prompts generated at once: pieces of long texts multiply the rows of a batch.
    max_rows: int = 32
    device: torch.device = CPU
    dtype: torch.dtype | None = None  # None: the checkpoint's saved dtype


def _word_ids(tokenizer: Any, word: str) -> list[int]:
    """Token ids that spell `word` as one token, with or without a leading space."""
    encoded = [tokenizer.encode(text, add_special_tokens=False) for text in (word, " " + word)]
    ids = {enc[0] for enc in encoded if len(enc) == 1}
    return sorted(ids) or [encoded[0][0]]


class LlamaGuardClassifier(Classifier):
    id = "llama-guard"

    def __init__(self, config: LlamaGuardConfig, policy: Policy) -> None:
        check_policy(config.version, policy)
        self.config = config
        self.categories = policy.enabled
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_dir, local_files_only=True)
        # Before the weights load: a checkpoint of another release is a config error.
        self.format = choose_format(config.version, self.categories, self.tokenizer)
        # Left padding: every row's last prompt token sits at the end, where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype: dict[str, Any] = {"dtype": config.dtype} if config.dtype else {}
        self.model = (
            AutoModelForCausalLM.from_pretrained(config.model_dir, local_files_only=True, **dtype)
            .eval()
            .to(config.device)
        )
        limit = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.window = config.window or limit - config.max_new_tokens
        base = len(self.prompt_ids(self.format.build([Message(Role.USER, "")])))
        if self.window - base < MIN_PIECE_TOKENS:
            raise PolicyError(
                f"the {self.format.name} prompt for policy '{policy.name}' takes {base} of the "
                f"{self.window}-token window, leaving no room for the text to judge"
            )
        self.unsafe_ids = _word_ids(self.tokenizer, "unsafe")
        weights = sorted(config.model_dir.glob("*.safetensors"))
        self.version = file_version(weights[0]) if weights else "unknown"
        log.info("Llama Guard prompt: %s, window %d tokens", self.format.name, self.window)

    def labels(self) -> frozenset[str]:
        # The model judges whatever categories its prompt lists: the policy's enabled ones.
        return frozenset(c.code for c in self.categories)

    # The codec the window planner works with (llama_guard_fit.Codec).
    def prompt_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=self.format.add_special_tokens)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    @torch.inference_mode()
    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        plans = [
            plan_prompts(i.dialog, self.format.build, self, self.window, self.config.overlap) for i in items
        ]
        rows = [ids for plan in plans for ids in plan.prompts]
        answers = []
        for start in range(0, len(rows), self.config.max_rows):
            answers.extend(self._generate(rows[start : start + self.config.max_rows]))
        results = []
        for plan in plans:
            results.append(self._worst(plan, answers[: len(plan.prompts)]))
            answers = answers[len(plan.prompts) :]
        return results

    def _generate(self, rows: list[list[int]]) -> list[tuple[str, float]]:
        """Greedy answers to the prompts, each with P("unsafe") where its first word was chosen."""
        batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.config.device)
        out = self.model.generate(
            **batch,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        generated = out.sequences[:, batch["input_ids"].shape[1] :].cpu()
        answers = []
        for r, row in enumerate(generated):
            text = str(self.tokenizer.decode(row, skip_special_tokens=True))
            step = self._first_word_step(row.tolist())
            p_unsafe = 0.0
            if step is not None:
                probs = torch.softmax(out.scores[step][r].float(), dim=-1)
                p_unsafe = float(probs[self.unsafe_ids].sum())
            answers.append((text, p_unsafe))
        return answers

    def _first_word_step(self, tokens: list[int]) -> int | None:
        # Llama Guard 3 answers "\n\nunsafe...": the score is read where the word is chosen, not
        # at the blank line before it.
        for step, token in enumerate(tokens):
            if str(self.tokenizer.decode([token], skip_special_tokens=True)).strip():
                return step
        return None

    def _worst(self, plan: Plan, answers: list[tuple[str, float]]) -> Judgement:
        codes = [c.code for c in self.categories]
        scores: dict[str, float] = {}
        flagged: set[str] = set()
        for text, p_unsafe in answers:
            assessment = parse_assessment(text, codes)
            score = p_unsafe if assessment.well_formed else 1.0
            for code in assessment.codes:
                scores[code] = max(scores.get(code, 0.0), score)
                flagged.add(code)
        return Judgement(
            scores=scores,
            # Every token the model read for this item, over all its prompts.
            judged_tokens=sum(len(ids) for ids in plan.prompts),
            # One prompt per piece of a judged turn too long for one.
            judged_segments=len(plan.prompts),
            truncated=plan.context_dropped,
            flagged=frozenset(flagged),
        )
