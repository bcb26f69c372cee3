"""Tiny transformers checkpoints built offline for the safety backends' tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
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
