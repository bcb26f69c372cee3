"""Llama Guard as a classifier: a causal LM that answers "safe" / "unsafe\\nO1,O3" to its prompt.

Score: the probability of "unsafe" as the first generated token (the model card's way to get a
tunable threshold); every category the model lists gets that score and counts as flagged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.dialog import Message, Role
from services.safety.classifiers.base import Classifier
from services.safety.classifiers.llama_guard_prompt import build_prompt, parse_assessment
from services.safety.device import CPU
from services.safety.head import file_version
from services.safety.policy import Policy
from services.safety.verdict import CheckItem, Judgement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlamaGuardConfig:
    model_dir: Path
    max_new_tokens: int = 20
    # Prompt budget; None: the model's max_position_embeddings less max_new_tokens.
    window: int | None = None
    device: torch.device = CPU
    dtype: torch.dtype | None = None  # None: the checkpoint's saved dtype


class LlamaGuardClassifier(Classifier):
    id = "llama-guard"

    def __init__(self, config: LlamaGuardConfig, policy: Policy) -> None:
        self.config = config
        self.categories = policy.enabled
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_dir, local_files_only=True)
        # Left padding: every row's last prompt token sits at the end, where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = {"dtype": config.dtype} if config.dtype else {}
        self.model = (
            AutoModelForCausalLM.from_pretrained(config.model_dir, local_files_only=True, **dtype)
            .eval()
            .to(config.device)
        )
        limit = int(getattr(self.model.config, "max_position_embeddings", 4096))
        self.window = config.window or limit - config.max_new_tokens
        self.unsafe_id = self.tokenizer.encode("unsafe", add_special_tokens=False)[0]
        weights = sorted(config.model_dir.glob("*.safetensors"))
        self.version = file_version(weights[0]) if weights else "unknown"

    def labels(self) -> frozenset[str]:
        # The model judges whatever categories its prompt lists: the policy's enabled ones.
        return frozenset(c.code for c in self.categories)

    def _fit(self, dialog: Sequence[Message]) -> tuple[list[int], bool]:
        """Prompt ids within the window: drop the oldest turns, then the judged turn's oldest text."""
        turns = [m for m in dialog if m.role is not Role.SYSTEM]
        truncated = False
        while True:
            ids = self.tokenizer(build_prompt(turns, self.categories))["input_ids"]
            if len(ids) <= self.window:
                return list(ids), truncated
            truncated = True
            if len(turns) > 1:
                turns = turns[1:] if turns[0].role is Role.ASSISTANT or len(turns) == 2 else turns[2:]
                continue
            last = turns[-1]
            content_ids = self.tokenizer(last.content, add_special_tokens=False)["input_ids"]
            excess = len(ids) - self.window
            if excess >= len(content_ids):
                raise ValueError(f"the Llama Guard prompt alone exceeds the {self.window}-token window")
            kept = str(self.tokenizer.decode(content_ids[excess + 1 :]))
            turns = [Message(last.role, kept)]

    @torch.inference_mode()
    def judge(self, items: Sequence[CheckItem]) -> list[Judgement]:
        fitted = [self._fit(item.dialog) for item in items]
        batch = self.tokenizer.pad({"input_ids": [ids for ids, _ in fitted]}, return_tensors="pt")
        batch = batch.to(self.config.device)
        out = self.model.generate(
            **batch,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        first = torch.softmax(out.scores[0].float(), dim=-1)[:, self.unsafe_id].cpu().tolist()
        generated = out.sequences[:, batch["input_ids"].shape[1] :].cpu()
        codes = [c.code for c in self.categories]
        results = []
        for row, p_unsafe, (ids, truncated) in zip(generated, first, fitted, strict=True):
            text = str(self.tokenizer.decode(row, skip_special_tokens=True))
            assessment = parse_assessment(text, codes)
            score = p_unsafe if assessment.well_formed else 1.0
            results.append(
                Judgement(
                    scores={code: score for code in assessment.codes},
                    judged_tokens=len(ids),
                    truncated=truncated,
                    flagged=frozenset(assessment.codes),
                )
            )
        return results
