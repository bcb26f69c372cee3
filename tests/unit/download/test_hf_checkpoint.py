"""`llamagate verify-hf` on a tiny LlamaForCausalLM saved by transformers: good and broken directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from llamagate.cli import build_parser
from llamagate.download.errors import CheckpointInvalid
from llamagate.download.hf_checkpoint import verify_hf_dir
from llamagate.download.hf_load import check_loads


def tiny_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(directory)
    return directory


def copy_of(saved: Path, tmp_path: Path) -> Path:
    for f in saved.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def verify_hf(directory: Path, *extra: str) -> int:
    args = build_parser().parse_args(["verify-hf", str(directory), *extra])
    return int(args.func(args))


def test_saved_model_verifies_and_loads(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify_hf_dir(saved)
    check_loads(saved, report)

    assert report.shape.kv_heads == 2 and report.shape.head_dim == 16
    expected_params = sum(p.numel() for p in LlamaForCausalLM(tiny_config()).parameters())
    assert report.parameters == expected_params
    assert verify_hf(saved) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {saved}: LlamaForCausalLM, 2 layers, hidden 64, 4 heads (2 kv)")


def test_missing_tensor_is_named(saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = copy_of(saved, tmp_path)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(
        CheckpointInvalid, match=r"1 tensor\(s\) missing: model\.layers\.1\.mlp\.down_proj\.weight"
    ):
        verify_hf_dir(broken)
    assert verify_hf(broken) == 7
    assert "model.layers.1.mlp.down_proj.weight" in capsys.readouterr().err


def test_config_that_does_not_match_the_weights_names_the_shapes(saved: Path, tmp_path: Path) -> None:
    broken = copy_of(saved, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    config["num_key_value_heads"] = 4  # weights were saved with 2
    (broken / "config.json").write_text(json.dumps(config))

    with pytest.raises(
        CheckpointInvalid, match=r"k_proj\.weight is \[32, 64\] in model\.safetensors, expected \[64, 64\]"
    ):
        verify_hf_dir(broken)


def test_truncated_safetensors_file_is_named(saved: Path, tmp_path: Path) -> None:
    broken = copy_of(saved, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) - 1000])

    with pytest.raises(CheckpointInvalid, match=r"model\.safetensors cannot be read"):
        verify_hf_dir(broken)


def test_sharded_directory_with_a_missing_shard_is_named(saved: Path, tmp_path: Path) -> None:
    broken = copy_of(saved, tmp_path)
    tensors = load_file(broken / "model.safetensors")
    (broken / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, broken / file, metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (broken / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    verify_hf_dir(broken)  # complete: fine

    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointInvalid, match=r"missing: model-00002-of-00002\.safetensors"):
        verify_hf_dir(broken)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointInvalid, match=r"config\.json is missing"):
        verify_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointInvalid, match="lacks 'hidden_size'"):
        verify_hf_dir(tmp_path)


def test_load_check_compares_with_the_model_transformers_builds(saved: Path) -> None:
    report = verify_hf_dir(saved)
    del report.tensors["model.norm.weight"]  # as if the headers lacked it

    with pytest.raises(CheckpointInvalid, match=r"would not load it: missing \['model\.norm\.weight'\]"):
        check_loads(saved, report)


def test_model_the_inference_server_cannot_serve_fails_the_load_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config()
    config.attention_bias = True  # a valid LlamaForCausalLM, but not a Llama 2 our server runs
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    verify_hf_dir(tmp_path)  # the files themselves are complete and consistent

    assert verify_hf(tmp_path) == 7
    assert "llamagate's inference server would not serve" in capsys.readouterr().err
    assert verify_hf(tmp_path, "--no-load") == 0
