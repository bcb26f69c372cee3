"""Llama Guard 2 (Meta-Llama-Guard-2-8B): its eleven categories and its prompt.

The prompt is the one its Hugging Face chat template renders, which is also what the reference
prompt code (llama-recipes' prompt_format_utils, Llama Guard 2 with category names only) builds:
"[INST] Task: ...", each category as "S1: Violent Crimes. " (a space after the period),
"User: ..." / "Agent: ..." turns each followed by a blank line, the "ONLY THE LAST" instructions,
" [/INST]". The model is Llama 3 based; its tokenizer adds <|begin_of_text|> in front.
"""

from __future__ import annotations

from services.safety.classifiers.llama_guard_layout import Layout, names_by_code

CATEGORIES = {
    "S1": "Violent Crimes. ",
    "S2": "Non-Violent Crimes. ",
    "S3": "Sex Crimes. ",
    "S4": "Child Exploitation. ",
    "S5": "Specialized Advice. ",
    "S6": "Privacy. ",
    "S7": "Intellectual Property. ",
    "S8": "Indiscriminate Weapons. ",
    "S9": "Hate. ",
    "S10": "Self-Harm. ",
    "S11": "Sexual Content. ",
}
# Where the model card's taxonomy table names a category differently from the prompt.
CARD_NAMES = {"S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation", "S10": "Suicide & Self-Harm"}

LAYOUT = Layout(
    name="Llama Guard 2",
    version=2,
    head="[INST] ",
    tail=" [/INST]",
    categories=CATEGORIES,
    default_codes=tuple(CATEGORIES),
    names=names_by_code(CATEGORIES, CARD_NAMES),
    add_special_tokens=True,
)
