"""What a real 1B-8B checkpoint needs from the training path, checked on tiny offline models.

Exact sampling (rollouts come from the distribution PPO scores), one reward reading everywhere,
special tokens kept, ties, mixed precision with float32 master weights, LoRA, exact resume.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from rlhf.training.config import ModelConfig, PPOConfig, RewardModelConfig
from rlhf.training.losses import bradley_terry_loss
from rlhf.training.models import load_reward_model, render_conversation, reward_scores
from rlhf.training.ppo import ppo_rollout, ppo_score, ppo_setup, ppo_update, run_ppo
from rlhf.training.reward import build_reward_trainer, score_texts, train_reward_model, training_groups
from rlhf.training.rows import ComparisonRow, PromptRow
from rlhf.training.tiny import build_tiny_tokenizer, load_corpus, train_demo_sft
from tests.rlhf.training.conftest import make_comparisons

PROMPTS = [PromptRow(id=str(i), text=r["instruction"]) for i, r in enumerate(load_corpus()[:32])]


def _ppo_config(**kwargs) -> PPOConfig:
    defaults = {
        "total_episodes": 8 * 2,
        "batch_size": 8,
        "mini_batch_size": 4,
        "num_ppo_epochs": 1,
        "response_length": 12,
        "learning_rate": 1e-3,
        "device": "cpu",
        "value_model": "head",
        "missing_eos_penalty": 0.0,
        "temperature": 0.7,
    }
    defaults.update(kwargs)
    return PPOConfig(**defaults)


def _length_reward(response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(1) / mask.shape[1]


@pytest.fixture(scope="module")
def penalised_policy(sft_policy, tmp_path_factory) -> str:
    """The SFT policy with a generation_config.json that asks for a repetition penalty, top_k and
    min_p, as many hub chat models ship (Qwen2.5-Instruct: repetition_penalty 1.05)."""
    path = tmp_path_factory.mktemp("penalised")
    model = AutoModelForCausalLM.from_pretrained(sft_policy)
    model.generation_config.do_sample = True
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.top_k = 20
    model.generation_config.min_p = 0.05
    model.save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("engine", ["hf", "hf_fast"])
def test_rollouts_are_sampled_from_the_distribution_ppo_scores(penalised_policy, engine):
    config = _ppo_config(rollout_engine=engine, rollout_batch_size=3, forward_batch_size=5)
    torch.manual_seed(0)
    setup = ppo_setup(
        config, policy_path=penalised_policy, ref_path=penalised_policy, reward_path=None, reward_fn=_length_reward
    )
    batch = ppo_score(setup, ppo_rollout(setup, PROMPTS[:8], _queries(setup)))
    mask = batch.rollout.mask.bool()
    assert batch.rollout.generate_calls == 3  # 8 prompts in micro-batches of 3
    gap = (batch.rollout.logprobs - batch.logprobs).abs()[mask]
    assert gap.max().item() < 1e-4  # the sampler's log-probabilities are the trained policy's
    # The reference is the same model: per-token KL exactly 0.
    assert (batch.logprobs - batch.ref_logprobs).abs().max().item() < 1e-5
    stats = ppo_update(setup, batch, [])
    assert stats["ratio"][0] == pytest.approx(1.0, abs=1e-5)  # first minibatch: nothing changed yet
    assert stats["approx_kl"][0] == pytest.approx(0.0, abs=1e-6)


def _queries(setup):
    from rlhf.training.ppo import encode_prompts

    return encode_prompts(setup.tokenizer, PROMPTS[:8], setup.config)


@pytest.fixture(scope="module")
def pad_is_eos(tmp_path_factory) -> tuple[str, str]:
    """A policy and a reward model whose tokenizer pads with its EOS (GPT-2, Llama-3 base, Mistral)."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    policy_dir = tmp_path_factory.mktemp("pad-eos-policy")
    sft = train_demo_sft(tmp_path_factory.mktemp("pad-eos-sft"), quick=True)["model_path"]
    model = AutoModelForCausalLM.from_pretrained(sft)
    model.config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    rm = train_reward_model(
        RewardModelConfig(
            model=ModelConfig(model_name_or_path=str(policy_dir), device="cpu"),
            learning_rate=3e-3,
            max_pairs_per_batch=24,
        ),
        make_comparisons(24),
        output_dir=tmp_path_factory.mktemp("pad-eos-rm"),
    ).model_path
    return str(policy_dir), rm


def test_ppo_reads_the_reward_where_the_reward_model_was_trained(pad_is_eos):
    policy, rm = pad_is_eos
    config = _ppo_config(response_length=24, temperature=1.0)
    torch.manual_seed(3)
    setup = ppo_setup(config, policy_path=policy, ref_path=policy, reward_path=rm)
    batch = ppo_score(setup, ppo_rollout(setup, PROMPTS[:8], _queries(setup)))
    assert batch.rollout.finished.any()  # some responses end with EOS (== pad) ...
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=rm, device="cpu"))
    texts = setup.tokenizer.batch_decode(batch.rollout.response, skip_special_tokens=True)
    conversations = [
        render_conversation(tokenizer, p.content, t, finished=bool(f))
        for p, t, f in zip(PROMPTS[:8], texts, batch.rollout.finished.tolist(), strict=True)
    ]
    expected = score_texts(model, tokenizer, conversations)
    assert batch.raw_scores.tolist() == pytest.approx(expected, abs=1e-4)
    # ... and there, the model's own pooling ("last token that is not pad") reads one token early.
    ids = tokenizer(conversations[int(batch.rollout.finished.float().argmax())], return_tensors="pt")
    pooled = model(**ids).logits[0, 0].item()
    ours = reward_scores(model, ids["input_ids"], ids["attention_mask"], normalize=False).item()
    assert abs(pooled - ours) > 1e-3


def test_reward_model_is_normalised_on_its_training_responses(pad_is_eos):
    _, rm = pad_is_eos
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=rm, device="cpu"))
    assert model.config.reward_scale > 0 and model.config.reward_offset != 0.0
    rows = make_comparisons(24)
    texts = sorted({render_conversation(tokenizer, r.prompt, t) for r in rows for t in (r.chosen, r.rejected)})
    scores = torch.tensor(score_texts(model, tokenizer, texts))
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-3)


def _bert_reward_model(path: Path) -> str:
    """A tiny BERT-style encoder classifier with a WordPiece tokenizer: [CLS] text [SEP], no EOS."""
    texts = [f"{r['instruction']} {r['answer']}" for r in load_corpus()]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_encoder_reward_model_reads_cls_and_keeps_special_tokens(tmp_path):
    path = _bert_reward_model(tmp_path / "bert")
    config = RewardModelConfig(
        model=ModelConfig(model_name_or_path=path, device="cpu"), learning_rate=3e-3, max_pairs_per_batch=24
    )
    model, tokenizer = load_reward_model(config.model)
    row = ComparisonRow(prompt="Say something about the river.", chosen="good river", rejected="cloud", group_id="g")
    groups, _ = training_groups([row], tokenizer, config)
    own = tokenizer(render_conversation(tokenizer, row.prompt, row.chosen))["input_ids"]
    assert groups[0]["input_ids"][0] == own  # the tokenizer's own encoding, special tokens included
    assert own[0] == tokenizer.cls_token_id and own[-1] == tokenizer.sep_token_id
    # An encoder is read by its own pooling of [CLS].
    ids = tokenizer(["good river", "cloud garden bridge"], padding=True, return_tensors="pt")
    assert reward_scores(model, ids["input_ids"], ids["attention_mask"]).tolist() == pytest.approx(
        model(**ids).logits[:, 0].tolist()
    )
    rows = make_comparisons(40) + make_comparisons(12, seed=1, split="val")
    result = train_reward_model(
        RewardModelConfig(model=config.model, learning_rate=3e-3, num_epochs=3.0, max_pairs_per_batch=24),
        rows,
        output_dir=tmp_path / "rm",
    )
    assert result.metrics["reward/accuracy"] >= 0.8


def test_ppo_with_a_reward_model_of_another_tokenizer(sft_policy, tmp_path):
    rm = _bert_reward_model(tmp_path / "bert")
    result = run_ppo(
        _ppo_config(total_episodes=8),
        PROMPTS,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=rm,
        output_dir=tmp_path / "ppo",
    )
    assert math.isfinite(result.metrics["ppo/score"])


def test_tie_pair_away_from_zero_gets_the_tie_loss(sft_policy, tmp_path):
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.5, 0.0])
    tie = torch.tensor([True, False])
    loss = bradley_terry_loss(chosen, rejected, is_tie=tie)
    tie_loss = -0.5 * (F.logsigmoid(torch.tensor(1.5)) + F.logsigmoid(torch.tensor(-1.5)))
    win_loss = -F.logsigmoid(torch.tensor(1.0))
    assert loss.item() == pytest.approx(((tie_loss + win_loss) / 2).item(), abs=1e-6)
    assert tie_loss.item() == pytest.approx(0.9514, abs=1e-4)  # the win loss of d=1.5 would be 0.2014
    # Through the trainer: a ranking with a tie is one batch; its loss uses the tie formula.
    rows = [
        ComparisonRow(prompt="p", chosen="a b", rejected="c", group_id="g"),
        ComparisonRow(prompt="p", chosen="a b", rejected="d e f", group_id="g", is_tie=True),
    ]
    config = RewardModelConfig(model=ModelConfig(model_name_or_path=sft_policy, device="cpu"), include_ties=True)
    trainer, _, _, _ = build_reward_trainer(config, rows, output_dir=tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    rewards = reward_scores(trainer.model, batch["input_ids"], batch["attention_mask"], normalize=False)
    d = rewards[batch["chosen_index"]] - rewards[batch["rejected_index"]]
    expected = 0.5 * (-F.logsigmoid(d[0])) + 0.5 * (-0.5 * (F.logsigmoid(d[1]) + F.logsigmoid(-d[1])))
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(expected.item(), abs=1e-5)


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> tuple[int, int]:
    names = [n for n in before if n in after]
    return sum(not torch.equal(before[n].float(), after[n].float()) for n in names), len(names)


def test_mixed_precision_reward_training_keeps_small_updates(sft_policy, tmp_path):
    rows = make_comparisons(16)
    before = AutoModelForCausalLM.from_pretrained(sft_policy).transformer.state_dict()

    def trained(**model_kwargs) -> dict[str, torch.Tensor]:
        config = RewardModelConfig(
            model=ModelConfig(model_name_or_path=sft_policy, device="cpu", **model_kwargs),
            learning_rate=1e-5,
            max_pairs_per_batch=12,
            normalize_rewards=False,
        )
        path = train_reward_model(config, rows, output_dir=tmp_path / str(len(model_kwargs))).model_path
        return AutoModelForSequenceClassification.from_pretrained(path).transformer.state_dict()

    changed, total = _changed(before, trained(mixed_precision="bf16"))
    assert changed == total  # float32 master weights: every tensor moved
    rounded = {n: t.to(torch.bfloat16) for n, t in before.items()}
    changed_bf16, _ = _changed(rounded, {n: t.to(torch.bfloat16) for n, t in trained(dtype="bfloat16").items()})
    assert changed_bf16 < total  # pure bf16 rounds 1e-5 updates away on many tensors


def test_mixed_precision_ppo_changes_every_policy_tensor(sft_policy, tmp_path):
    result = run_ppo(
        _ppo_config(learning_rate=1e-5, mixed_precision="bf16", gradient_checkpointing=True),
        PROMPTS,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=None,
        reward_fn=_length_reward,
        output_dir=tmp_path,
    )
    before = GPT2LMHeadModel.from_pretrained(sft_policy).state_dict()
    after = GPT2LMHeadModel.from_pretrained(result.model_path)
    assert after.dtype == torch.float32
    changed, total = _changed(before, after.state_dict())
    assert changed == total


def test_lora_ppo_shares_the_base_as_reference_and_gives_the_critic_an_adapter(sft_policy, tmp_path):
    rm = train_reward_model(
        RewardModelConfig(
            model=ModelConfig(model_name_or_path=sft_policy, device="cpu", lora_r=4),
            learning_rate=3e-3,
            max_pairs_per_batch=24,
        ),
        make_comparisons(8),
        output_dir=tmp_path / "rm",
    ).model_path
    assert "score.weight" in AutoModelForSequenceClassification.from_pretrained(rm).state_dict()  # merged
    config = _ppo_config(lora_r=4, value_model="reward")
    setup = ppo_setup(config, policy_path=sft_policy, ref_path=sft_policy, reward_path=rm)
    assert setup.ref_policy is None  # one base copy: the reference is the policy without its adapter
    trainable = [n for n, p in setup.value_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    result = run_ppo(
        config, PROMPTS, policy_path=sft_policy, ref_path=sft_policy, reward_path=rm, output_dir=tmp_path / "ppo"
    )
    before = GPT2LMHeadModel.from_pretrained(sft_policy).state_dict()
    changed, _ = _changed(before, GPT2LMHeadModel.from_pretrained(result.model_path).state_dict())
    assert changed > 0


def _dtypes(model: torch.nn.Module) -> tuple[set[torch.dtype], set[torch.dtype]]:
    """(dtypes of the frozen parameters, dtypes of the trained ones)."""
    params = list(model.parameters())
    return {p.dtype for p in params if not p.requires_grad}, {p.dtype for p in params if p.requires_grad}


def test_lora_under_mixed_precision_holds_a_half_base_and_float32_adapters(sft_policy):
    # A LoRA base is frozen: it is held in bf16 (2 bytes/param); adapters and heads train in float32.
    rm, _ = load_reward_model(
        ModelConfig(model_name_or_path=sft_policy, device="cpu", lora_r=4, mixed_precision="bf16")
    )
    assert _dtypes(rm) == ({torch.bfloat16}, {torch.float32})
    config = _ppo_config(lora_r=4, value_model="reward", mixed_precision="bf16")
    setup = ppo_setup(config, policy_path=sft_policy, ref_path=sft_policy, reward_path=sft_policy)
    assert _dtypes(setup.policy) == ({torch.bfloat16}, {torch.float32})
    assert _dtypes(setup.value_model) == ({torch.bfloat16}, {torch.float32})
    assert setup.reward_model is not None and _dtypes(setup.reward_model) == ({torch.bfloat16}, set())
    before = {n: p.detach().clone() for n, p in setup.policy.named_parameters() if p.requires_grad}
    ppo_update(setup, ppo_score(setup, ppo_rollout(setup, PROMPTS[:8], _queries(setup))), [])
    after = dict(setup.policy.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("engine", ["hf_fast"])
def test_resume_gives_the_parameters_of_an_uninterrupted_run(sft_policy, tmp_path, engine):
    config = _ppo_config(total_episodes=8 * 3, save_every=1, adaptive_kl=True, rollout_engine=engine)
    kwargs = dict(policy_path=sft_policy, ref_path=sft_policy, reward_path=None, reward_fn=_length_reward)
    straight = run_ppo(config, PROMPTS, output_dir=tmp_path / "straight", **kwargs)

    def crash_after_two(step, total, metrics):
        if step == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run_ppo(config, PROMPTS, output_dir=tmp_path / "resumed", on_progress=crash_after_two, **kwargs)
    resumed = run_ppo(config, PROMPTS, output_dir=tmp_path / "resumed", **kwargs)
    a = GPT2LMHeadModel.from_pretrained(straight.model_path).state_dict()
    b = GPT2LMHeadModel.from_pretrained(resumed.model_path).state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed.metrics["ppo/optimizer_steps"] == straight.metrics["ppo/optimizer_steps"] == 3 * 2


def test_ppo_counts_its_work(sft_policy, tmp_path):
    result = run_ppo(
        _ppo_config(total_episodes=8 * 2, num_ppo_epochs=2, rollout_batch_size=4),
        PROMPTS,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=None,
        reward_fn=_length_reward,
        output_dir=tmp_path,
    )
    m = result.metrics
    assert (m["ppo/rollouts"], m["ppo/generate_calls"], m["ppo/optimizer_steps"]) == (16, 4, 2 * 2 * 2)
