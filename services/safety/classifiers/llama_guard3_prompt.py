"""Llama Guard 3 (8B and 1B): its fourteen categories and the two prompts its checkpoints carry.

Each prompt is what that checkpoint's Hugging Face chat template renders (the model cards' usage
formats through `tokenizer.apply_chat_template`), byte for byte. The two templates differ:

* 8B: S1-S14; the rendered text starts with a space before <|begin_of_text|>, and the last
  instruction runs straight into <|eot_id|>.
* 1B: S1-S13 by default (its template takes a category list and excluded keys); no leading space,
  and a space before <|eot_id|>.

Both end with the assistant header and no blank line after it, so the model's answer starts with
"\\n\\n" before "safe" / "unsafe". The category wording here is the templates', keyed by code; the
policy's own names and descriptions (policies/mlcommons.yaml) do not go into this prompt.
"""

from __future__ import annotations

from services.safety.classifiers.llama_guard_layout import Layout, names_by_code

CATEGORIES = {
    "S1": "Violent Crimes.",
    "S2": "Non-Violent Crimes.",
    "S3": "Sex Crimes.",
    "S4": "Child Exploitation.",
    "S5": "Defamation.",
    "S6": "Specialized Advice.",
    "S7": "Privacy.",
    "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.",
    "S10": "Hate.",
    "S11": "Self-Harm.",
    "S12": "Sexual Content.",
    "S13": "Elections.",
    "S14": "Code Interpreter Abuse.",
}
CARD_NAMES = {"S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation", "S11": "Suicide & Self-Harm"}
NAMES = names_by_code(CATEGORIES, CARD_NAMES)

USER_HEADER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"

LAYOUT_8B = Layout(
    name="Llama Guard 3 (8B)",
    version=3,
    head=" " + USER_HEADER,
    tail=ASSISTANT_HEADER,
    categories=CATEGORIES,
    default_codes=tuple(CATEGORIES),
    names=NAMES,
    add_special_tokens=False,
)
LAYOUT_1B = Layout(
    name="Llama Guard 3 (1B)",
    version=3,
    head=USER_HEADER,
    tail=" " + ASSISTANT_HEADER,
    categories=CATEGORIES,
    default_codes=tuple(code for code in CATEGORIES if code != "S14"),
    names=NAMES,
    add_special_tokens=False,
)
