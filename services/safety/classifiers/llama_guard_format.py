"""Which Llama Guard prompt to build: the release (--llama-guard-version), checked against the policy
and against the checkpoint's own chat template before any weights load.

Llama Guard 1 reads each category's description from the policy, so it serves any taxonomy.
Llama Guard 2 and 3 were trained on one fixed taxonomy each and their prompts name categories in
that wording, keyed by code; a policy for them must use their codes for the same categories
(S5 is Specialized Advice in Llama Guard 2 but Defamation in Llama Guard 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from jinja2 import TemplateError

from services.common.dialog import Message, Role
from services.safety.classifiers import llama_guard_prompt as v1
from services.safety.classifiers.llama_guard2_prompt import LAYOUT as V2
from services.safety.classifiers.llama_guard3_prompt import LAYOUT_1B as V3_1B
from services.safety.classifiers.llama_guard3_prompt import LAYOUT_8B as V3_8B
from services.safety.classifiers.llama_guard_layout import Layout, name_key
from services.safety.policy import Category, Policy, PolicyError

log = logging.getLogger(__name__)

VERSIONS = (1, 2, 3)
# The packaged policy written for each release.
POLICY_FOR = {
    1: "services/safety/policies/llama_guard.yaml",
    2: "services/safety/policies/llama_guard2.yaml",
    3: "services/safety/policies/mlcommons.yaml",
}
LAYOUTS: dict[int, tuple[Layout, ...]] = {2: (V2,), 3: (V3_8B, V3_1B)}


@dataclass(frozen=True)
class PromptFormat:
    name: str
    version: int
    build: Callable[[Sequence[Message]], str]
    # Whether the tokenizer adds its BOS token (False where the prompt text carries it).
    add_special_tokens: bool


def check_policy(version: int, policy: Policy) -> None:
    """Every enabled category must be one the release was trained on, under the same code."""
    if version == 1:
        return
    layout = LAYOUTS[version][0]
    problems = []
    for c in policy.enabled:
        if c.code not in layout.categories:
            problems.append(f"{c.code} ({c.name}) is not one of its categories")
        elif name_key(c.name) not in layout.names[c.code]:
            expected = layout.categories[c.code].strip().rstrip(".")
            problems.append(f"{c.code} is '{c.name}' there but '{expected}' in Llama Guard {version}")
    if problems:
        codes = list(layout.categories)
        raise PolicyError(
            f"policy '{policy.name}' does not fit --llama-guard-version {version}: {'; '.join(problems)}. "
            f"Llama Guard {version} judges {codes[0]}-{codes[-1]} of its own taxonomy; use "
            f"--policy {POLICY_FOR[version]} (or a policy that extends it), or the "
            "--llama-guard-version the policy was written for"
        )


def prompt_format(version: int, categories: Sequence[Category], layout: Layout | None = None) -> PromptFormat:
    if version == 1:
        return PromptFormat("Llama Guard 1", 1, partial(v1.build_prompt, categories=categories), True)
    layout = layout or LAYOUTS[version][0]
    codes = [c.code for c in categories]
    return PromptFormat(layout.name, version, partial(layout.build, codes=codes), layout.add_special_tokens)


# A fixed two-turn conversation rendered through the checkpoint's chat template to see which
# release's prompt it is.
PROBE = (Message(Role.USER, "What is a lighthouse?"), Message(Role.ASSISTANT, "A tower with a light."))


def _rendered_by(tokenizer: Any) -> list[str]:
    """The probe as the checkpoint's template renders it, with text content and with content parts."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    out = []
    for parts in (False, True):
        messages = [
            {"role": m.role.value, "content": [{"type": "text", "text": m.content}] if parts else m.content}
            for m in PROBE
        ]
        try:
            out.append(str(tokenizer.apply_chat_template(messages, tokenize=False)))
        except TemplateError:
            continue  # the template expects the other content shape
    return out


def identify(tokenizer: Any) -> tuple[int, Layout | None] | None:
    """(release, layout) of the checkpoint's chat template; None when it has none or none we know."""
    for text in _rendered_by(tokenizer):
        for layouts in LAYOUTS.values():
            for layout in layouts:
                if text == layout.build(PROBE, layout.default_codes):
                    return layout.version, layout
        # Llama Guard 1 templates in circulation differ in small ways from the model card's
        # prompt (which is what this service builds); its taxonomy line identifies them.
        if "\nO1: Violence and Hate. \n" in text:
            return 1, None
    return None


def choose_format(version: int, categories: Sequence[Category], tokenizer: Any) -> PromptFormat:
    """The prompt for `version`, in the layout the checkpoint carries; a checkpoint of another
    release is a config error, since its model would be asked in a format it was not trained on."""
    found = identify(tokenizer)
    if found is not None and found[0] != version:
        raise PolicyError(
            f"--llama-guard-version {version}, but the checkpoint's chat template is "
            f"Llama Guard {found[0]}'s; pass --llama-guard-version {found[0]} with a policy of its taxonomy "
            f"(--policy {POLICY_FOR[found[0]]})"
        )
    layout = found[1] if found is not None else None
    fmt = prompt_format(version, categories, layout)
    if found is None and getattr(tokenizer, "chat_template", None):
        log.warning(
            "the checkpoint's chat template renders no Llama Guard prompt this service knows; "
            "judging with the %s prompt, as --llama-guard-version %d says",
            fmt.name,
            version,
        )
    return fmt
