"""model_role_problem: what a model must have to serve as a policy or a reward model, read from
its config and tokenizer alone. The models here are tiny and built offline; most are a config and
a tokenizer with no weights at all, which is all the check reads."""

from __future__ import annotations

import copy

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertTokenizerFast, CodeGenConfig, DistilBertConfig

from rlhf.training.checks import model_role_problem
from rlhf.training.tiny import build_tiny_policy, build_tiny_reward_model, tiny_gpt2_config

WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "blue", "is", "a", "calm", "colour"]


def _wordpiece_tokenizer() -> BertTokenizerFast:
    wordpiece = Tokenizer(models.WordPiece({t: i for i, t in enumerate(WORDPIECE_VOCAB)}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return BertTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _save(directory, config, tokenizer) -> str:
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def _encoder_config(cls):
    small = {"vocab_size": len(WORDPIECE_VOCAB), "num_labels": 1}
    if cls is DistilBertConfig:
        return cls(dim=16, n_layers=1, n_heads=2, hidden_dim=32, **small)
    return cls(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, **small)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer) -> str:
    return build_tiny_policy(tmp_path_factory.mktemp("policy"), tokenizer=tokenizer)


def test_a_tiny_gpt2_serves_both_roles(policy_dir, tmp_path, tokenizer):
    assert model_role_problem(policy_dir, "policy") is None
    assert model_role_problem(policy_dir, "policy", needs_chat_template=True) is None
    assert model_role_problem(policy_dir, "reward") is None  # the SFT model seeds the reward model
    reward_dir = build_tiny_reward_model(tmp_path / "rm", tokenizer=tokenizer)
    assert model_role_problem(reward_dir, "reward") is None


def test_an_encoder_without_eos_is_a_reward_model_but_no_policy(tmp_path):
    bert = _save(tmp_path / "bert", _encoder_config(BertConfig), _wordpiece_tokenizer())
    assert model_role_problem(bert, "reward") is None
    assert model_role_problem(bert, "policy") == (
        f"path: the tokenizer at '{bert}' has no EOS token; a policy needs one to end its responses "
        "(set eos_token in tokenizer_config.json)."
    )
    distilbert = _save(tmp_path / "distilbert", _encoder_config(DistilBertConfig), _wordpiece_tokenizer())
    assert model_role_problem(distilbert, "policy") == (
        f"path: a policy must be a causal language model, and '{distilbert}' is a distilbert model that "
        "AutoModelForCausalLM cannot load."
    )


def test_a_decoder_without_a_classification_head_is_no_reward_model(tmp_path, tokenizer):
    config = CodeGenConfig(
        vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, rotary_dim=4, architectures=["CodeGenForCausalLM"]
    )
    codegen = _save(tmp_path / "codegen", config, tokenizer)
    assert model_role_problem(codegen, "policy") is None
    assert model_role_problem(codegen, "reward") == (
        f"path: a reward model must load as a sequence classifier with a scalar head, and '{codegen}' is a "
        "codegen model (CodeGenForCausalLM) that AutoModelForSequenceClassification cannot load."
    )


def test_tokenizer_without_eos_or_pad(tmp_path, tokenizer):
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    path = _save(tmp_path / "no-eos", tiny_gpt2_config(tokenizer), no_eos)
    assert model_role_problem(path, "policy") == (
        f"path: the tokenizer at '{path}' has no EOS token; a policy needs one to end its responses "
        "(set eos_token in tokenizer_config.json)."
    )
    assert model_role_problem(path, "reward") is None  # it still pads
    no_eos.pad_token = None
    bare = _save(tmp_path / "bare", tiny_gpt2_config(tokenizer), no_eos)
    assert model_role_problem(bare, "reward") == (
        f"path: the tokenizer at '{bare}' has neither a pad nor an EOS token; a reward model needs one "
        "to score a batch (set pad_token in tokenizer_config.json)."
    )


def test_a_chat_template_is_needed_only_for_chat_prompts(tmp_path, tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    path = _save(tmp_path / "plain", tiny_gpt2_config(tokenizer), plain)
    assert model_role_problem(path, "policy") is None
    assert model_role_problem(path, "policy", needs_chat_template=True) == (
        f"path: the tokenizer at '{path}' has no chat template, and this project's prompts are chat messages "
        "(add chat_template.jinja or chat_template in tokenizer_config.json)."
    )


def test_unreadable_paths_say_why(tmp_path, tokenizer):
    missing = str(tmp_path / "nowhere")
    assert model_role_problem(missing, "policy") == (
        f"path: no model config could be read at '{missing}' (no such directory)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert model_role_problem(str(empty), "reward") == (
        f"path: no model config could be read at '{empty}' (no config.json in that directory)"
    )
    config_only = tmp_path / "config-only"
    tiny_gpt2_config(tokenizer).save_pretrained(config_only)
    assert model_role_problem(str(config_only), "policy") == (
        f"path: no tokenizer could be read at '{config_only}' (no tokenizer vocabulary there)"
    )
    tokenizer_file = config_only / "config.json"
    assert model_role_problem(str(tokenizer_file), "policy") == (
        f"path: no tokenizer could be read at '{tokenizer_file}' (not a directory)"
    )


def test_a_tokenizer_larger_than_the_model_vocabulary_does_not_belong_to_it(tmp_path, tokenizer):
    config = tiny_gpt2_config(tokenizer)
    config.vocab_size = 100
    path = _save(tmp_path / "mismatch", config, tokenizer)
    assert model_role_problem(path, "policy") == (
        f"path: the tokenizer at '{path}' has {len(tokenizer)} tokens but the model's vocabulary holds 100 "
        "(config vocab_size): they do not belong together."
    )


def test_a_hub_id_that_cannot_be_fetched_is_unreadable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = model_role_problem("no-such-org/no-such-model-xyz", "policy")
    assert problem is not None
    assert problem.startswith("path: no model config could be read at 'no-such-org/no-such-model-xyz' (")


def test_an_unknown_kind_is_a_programming_error(policy_dir):
    with pytest.raises(ValueError, match=r"^kind: must be policy or reward, got 'critic'$"):
        model_role_problem(policy_dir, "critic")
