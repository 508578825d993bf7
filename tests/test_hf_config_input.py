"""A Hugging Face ``config.json`` as a pool's model: every field the reader uses is checked, mixture-of-experts
configs are refused (the model is dense), and each problem is one line naming the file and the key."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from sim.catalog import HF_MOE_KEYS, model_from_hf_config
from sim.cli import main
from sim.errors import CatalogError

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"

#: Llama-3.1-8B's shape.
LLAMA = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072}

#: Mixtral-8x7B: a Llama-like shape with eight experts, two active per token (~87 GiB of bf16 weights).
MIXTRAL = {**LLAMA, "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
           "num_experts_per_tok": 2}

REQUIRED = ["hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size"]
OPTIONAL = ["num_key_value_heads", "head_dim", "max_position_embeddings"]
#: Not positive integers, and how the message shows each.
BAD = [("abc", "'abc'"), ([4096], "a JSON array"), ({"n": 1}, "a JSON object"), (0, "0"), (-1, "-1"),
       (4095.5, "4095.5"), (True, "true"), (float("inf"), "inf")]


def write(tmp_path: Path, cfg: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def fails(path: Path, message: str) -> None:
    """``model_from_hf_config(path)`` raises a CatalogError reading exactly ``PATH: message``."""
    with pytest.raises(CatalogError) as err:
        model_from_hf_config(path)
    assert str(err.value) == f"{path}: {message}"


def fleetsim(*argv) -> tuple[int, str, str]:
    """Run ``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("value", "shown"), BAD, ids=[s for _, s in BAD])
@pytest.mark.parametrize("key", REQUIRED + OPTIONAL)
def test_a_field_that_is_not_a_positive_integer_is_named(tmp_path, key, value, shown):
    fails(write(tmp_path, {**LLAMA, key: value}), f"{key} must be a positive integer, got {shown}")


@pytest.mark.parametrize("key", REQUIRED)
def test_a_required_field_that_is_null_is_named(tmp_path, key):
    fails(write(tmp_path, {**LLAMA, key: None}), f"{key} must be a positive integer, got null")


def test_an_optional_field_that_is_null_takes_its_default(tmp_path):
    spec = model_from_hf_config(write(tmp_path, {**LLAMA, "num_key_value_heads": None, "head_dim": None}))
    assert (spec.n_kv_heads, spec.head_dim) == (32, 128)


def test_a_whole_float_is_an_integer(tmp_path):
    spec = model_from_hf_config(write(tmp_path, {**LLAMA, "hidden_size": 4096.0, "vocab_size": 1.28256e5}))
    assert (spec.hidden_size, spec.vocab_size, spec.head_dim) == (4096, 128256, 128)
    assert isinstance(spec.hidden_size, int)


def test_hidden_size_must_split_into_the_heads_without_head_dim(tmp_path):
    fails(write(tmp_path, {**LLAMA, "hidden_size": 4100}),
          "hidden_size (4100) must be a multiple of num_attention_heads (32) when head_dim is not given")
    # With head_dim given the product need not be the hidden size (Qwen3-32B: 64 x 128 != 5120).
    spec = model_from_hf_config(write(tmp_path, {**LLAMA, "hidden_size": 4100, "head_dim": 128}))
    assert spec.head_dim == 128


@pytest.mark.parametrize("kv_heads", [5, 64])
def test_key_value_heads_must_divide_the_heads(tmp_path, kv_heads):
    fails(write(tmp_path, {**LLAMA, "num_key_value_heads": kv_heads}),
          "num_key_value_heads: num_attention_heads (32) must be a multiple of num_key_value_heads")


def test_zero_key_value_heads_is_not_read_as_the_head_count(tmp_path):
    fails(write(tmp_path, {**LLAMA, "num_key_value_heads": 0}), "num_key_value_heads must be a positive integer, got 0")


@pytest.mark.parametrize(("value", "shown"), [("false", "'false'"), (0, "0"), ([], "a JSON array")])
def test_tie_word_embeddings_must_be_a_boolean(tmp_path, value, shown):
    # bool("false") is True: the LM head would silently go uncounted.
    fails(write(tmp_path, {**LLAMA, "tie_word_embeddings": value}),
          f"tie_word_embeddings must be true or false, got {shown}")


def test_text_config_must_be_an_object(tmp_path):
    fails(write(tmp_path, {**LLAMA, "text_config": [1]}), "text_config must be a JSON object, got a JSON array")
    spec = model_from_hf_config(write(tmp_path, {"model_type": "llava", "text_config": LLAMA}))
    assert spec.hidden_size == 4096


def test_a_non_string_name_falls_back_to_the_folder(tmp_path):
    (tmp_path / "my-model").mkdir()
    spec = model_from_hf_config(write(tmp_path, {**LLAMA, "_name_or_path": 7}, "my-model/config.json"))
    assert spec.name == "my-model"


def test_mixtral_is_refused_as_mixture_of_experts(tmp_path):
    fails(write(tmp_path, MIXTRAL), "num_local_experts: mixture-of-experts models are not modelled, dense models "
                                    "only (found num_local_experts = 8, num_experts_per_tok = 2)")


@pytest.mark.parametrize("key", HF_MOE_KEYS)
def test_every_expert_key_marks_a_mixture_of_experts(tmp_path, key):
    path = write(tmp_path, {**LLAMA, key: 4})
    with pytest.raises(CatalogError, match=rf"^{re.escape(str(path))}: {key}: mixture-of-experts models are not "
                                           r"modelled, dense models only \(found " + key + " = 4\\)$"):
        model_from_hf_config(path)


def test_experts_nested_in_text_config_are_found(tmp_path):
    # Llama 4 keeps its experts in text_config.
    path = write(tmp_path, {"model_type": "llama4", "text_config": {**LLAMA, "num_local_experts": 16}})
    with pytest.raises(CatalogError, match="num_local_experts: mixture-of-experts models are not modelled"):
        model_from_hf_config(path)


def test_zero_or_null_experts_is_a_dense_model(tmp_path):
    spec = model_from_hf_config(write(tmp_path, {**LLAMA, "num_local_experts": 0, "n_routed_experts": None}))
    assert spec.n_params == model_from_hf_config(write(tmp_path, LLAMA, "dense.json")).n_params


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, {**LLAMA, "hidden_size": "abc"}, "c2.json")
    rc, out, err = fleetsim("validate", QUICKSTART, "--set", f"pools.h100.model={path}")
    assert (rc, out) == (2, "")
    assert err == (f"fleetsim: error: --set pools.h100.model={path}: pools.h100.model: {path}: hidden_size must be "
                   "a positive integer, got 'abc'\n")


def test_cli_refuses_mixtral_in_one_line(tmp_path):
    path = write(tmp_path, MIXTRAL, "mixtral.json")
    rc, out, err = fleetsim("validate", QUICKSTART, "--set", f"pools.h100.model={path}")
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("fleetsim: error: ")
    assert f"{path}: num_local_experts: mixture-of-experts models are not modelled" in err
