"""Tiny transformers checkpoints built offline for the safety backends' tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
# Kept whole by the tokenizer, and what the constructed head spells.
WORDS = ["[/INST]", "unsafe", "safe", "\n", ",", "O1", "O2", "O3", "O4", "O5", "O6", "User", "Agent"]


def build_tiny_llama_guard(path: Path, answer: list[str]) -> Path:
    """A 1-layer LlamaForCausalLM whose greedy output after the prompt is `answer`, then </s>.

    How: one-hot token embeddings, attention and MLP outputs zeroed (the residual stream is the
    current token's embedding), and an output head that is a transition table
    "[/INST]" -> answer[0] -> answer[1] -> ... -> "</s>".
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, normalized=False) for t in WORDS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(path)

    dim = 32
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[torch.arange(len(vocab)), torch.arange(len(vocab))] = 1.0
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        head = model.lm_head.weight
        head[vocab["</s>"], :] = 1.0  # anything else leads to end of sequence
        chain = ["[/INST]", *answer, "</s>"]
        for cur, nxt in itertools.pairwise(chain):
            head[vocab[nxt], vocab[cur]] = 20.0
    model.save_pretrained(path)
    return path


def build_tiny_bert_classifier(path: Path, labels: list[str]) -> Path:
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "hello",
        "world",
        "kill",
        "python",
        "process",
        "bomb",
    ]
    (path / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab_file=str(path / "vocab.txt"), model_max_length=64).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification",
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(path)
    return path


# A Llama-3-like vocabulary for the S-coded releases (Llama Guard 2 and 3): the header tokens are
# special, as in the real tokenizer, and the words a prompt or an answer needs are kept whole.
LLAMA3_SPECIAL = [
    "<unk>",
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|finetune_right_pad_id|>",
]
S_WORDS = [
    "[INST]", "[/INST]", "unsafe", "safe", "\n\n", "\n", ",", *(f"S{i}" for i in range(1, 15)),
    "User", "Agent", "hello", "world", "bomb",
]  # fmt: skip


def build_tiny_s_guard(
    path: Path,
    answer: list[str],
    *,
    trigger: str,
    alarm: tuple[str, list[str]] | None = None,
    chat_template: str | None = None,
) -> Path:
    """A 1-layer LlamaForCausalLM that answers `answer` after the prompt's last token `trigger`.

    Built like `build_tiny_llama_guard` (one-hot embeddings, zeroed MLP, an output head that is a
    transition table), with a tokenizer that adds <|begin_of_text|> when asked to. With
    `alarm=(word, other)` one attention head at `trigger` looks for `word` anywhere before it; if
    it is there the answer is `other` instead, so a test can tell which text a prompt carried.
    """
    vocab = {tok: i for i, tok in enumerate(LLAMA3_SPECIAL + S_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in LLAMA3_SPECIAL])
    tok.add_tokens([AddedToken(t, normalized=False) for t in S_WORDS])
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(path)

    dim, feature = 64, 63  # one-hot token dims first; the last dim carries the alarm
    # A large rope_theta leaves the slowest rotary pair (dims 15/31 of a 32-dim head) all but
    # unrotated, so the alarm head finds its word at any distance.
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=dim, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192, rope_theta=1e6,
        tie_word_embeddings=False, bos_token_id=vocab[bos], eos_token_id=vocab["<|eot_id|>"],
        pad_token_id=vocab["<|finetune_right_pad_id|>"],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    successor: dict[str, str] = {}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[torch.arange(len(vocab)), torch.arange(len(vocab))] = 1.0
        model.model.norm.weight.fill_(1.0)
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        head = model.lm_head.weight
        head[vocab["<|eot_id|>"], :] = 1.0  # anything else leads to end of sequence
        chains = [[trigger, *answer, "<|eot_id|>"]]
        if alarm is not None:
            word, other = alarm
            chains.append([*other, "<|eot_id|>"])
            attn, scale = layer.self_attn, dim**0.5  # RMSNorm turns a one-hot into `scale`
            attn.q_proj.weight[15, vocab[trigger]] = 170.0 / scale  # score 170 / sqrt(32) = 30
            attn.k_proj.weight[15, vocab[word]] = 1.0 / scale
            attn.v_proj.weight[0, vocab[word]] = 1.0 / scale
            attn.o_proj.weight[feature, 0] = 1.0
            head[vocab[other[0]], feature] = 60.0  # outweighs the trigger's own successor
        for chain in chains:
            for cur, nxt in itertools.pairwise(chain):
                if successor.setdefault(cur, nxt) != nxt:
                    raise ValueError(f"{cur!r} cannot lead to both {successor[cur]!r} and {nxt!r}")
                head[vocab[nxt], vocab[cur]] = 20.0
    model.save_pretrained(path)
    return path


PROMPT_GUARD_LABELS = ["BENIGN", "INJECTION", "JAILBREAK"]


def build_tiny_prompt_guard(path: Path, logits: tuple[float, float, float] = (0.0, 1.0, 3.0)) -> Path:
    """A 1-layer DebertaV2ForSequenceClassification with Prompt Guard's labels, single-label like
    the real checkpoint, whose logits are `logits` for any text (zero classifier weights, the
    logits as its bias), with an offline [CLS] ... [SEP] tokenizer."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "ignore", "previous", "instructions", "hello", "world"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in words[:4]])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=64,
    ).save_pretrained(path)  # fmt: skip
    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pooler_hidden_size=32,
        relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, num_labels=3, id2label=dict(enumerate(PROMPT_GUARD_LABELS)),
        label2id={label: i for i, label in enumerate(PROMPT_GUARD_LABELS)},
    )  # fmt: skip
    model = DebertaV2ForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(logits))
    model.save_pretrained(path)
    return path


# Chat templates for the tiny checkpoints: this project's own Jinja, rendering what the Llama Guard 2
# and 3 checkpoints' templates render (test_llama_guard_prompts.py holds them to the references).
_TASK = (
    "Task: Check if there is unsafe content in '\" ~ judged ~ \"' messages in conversations according our "
    "safety policy with the below categories.\n\n"
)
_ASK = (
    'Provide your safety assessment for ONLY THE LAST " ~ judged ~ " message in the above conversation:\n'
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
)
_NAMES = [
    "Violent Crimes", "Non-Violent Crimes", "Sex Crimes", "Child Exploitation", "Defamation",
    "Specialized Advice", "Privacy", "Intellectual Property", "Indiscriminate Weapons", "Hate",
    "Self-Harm", "Sexual Content", "Elections", "Code Interpreter Abuse",
]  # fmt: skip
_V2_NAMES = [n for n in _NAMES[:12] if n != "Defamation"]


def _guard_template(head: str, tail: str, names: list[str], separator: str, parts: bool) -> str:
    """A chat template rendering what a Llama Guard 2 / 3 checkpoint's template renders.

    parts: content is a list of {"type": "text"} parts (the 1B), which also takes
    `excluded_category_keys`; else content is a string.
    """
    listing = ", ".join(f"('S{i}', '{n}')" for i, n in enumerate(names, 1))
    if parts:
        turn = (
            "{%- for part in message['content'] if part['type'] == 'text' -%}"
            "{{- who ~ ': ' ~ (part['text'] | trim) ~ '\n\n' -}}{%- endfor -%}"
        )
    else:
        turn = "{{- who ~ ': ' ~ (message['content'] | trim) ~ '\n\n' -}}"
    return "".join(
        [
            "{%- set judged = 'Agent' if messages | length is even else 'User' -%}",
            f'{{{{- "{head}{_TASK}<BEGIN UNSAFE CONTENT CATEGORIES>\n" -}}}}',
            f"{{%- for code, name in [{listing}] -%}}",
            "{%- if code not in (excluded_category_keys | default([])) -%}",
            f"{{{{- code ~ ': ' ~ name ~ '{separator}\n' -}}}}",
            "{%- endif -%}{%- endfor -%}",
            '{{- "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n" -}}',
            "{%- for message in messages -%}",
            "{%- set who = 'User' if message['role'] == 'user' else 'Agent' -%}",
            turn,
            "{%- endfor -%}",
            f'{{{{- "<END CONVERSATION>\n\n{_ASK}{tail}" -}}}}',
        ]
    )


TEMPLATE_V2 = _guard_template("[INST] ", " [/INST]", _V2_NAMES, ". ", parts=False)
TEMPLATE_V3_8B = _guard_template(
    " <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>",
    _NAMES,
    ".",
    parts=False,
)
TEMPLATE_V3_1B = _guard_template(
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
    " <|eot_id|><|start_header_id|>assistant<|end_header_id|>",
    _NAMES[:13],
    ".",
    parts=True,
)
