"""Rollout engines: sample responses from the policy, exactly from the distribution PPO scores.

One interface, three engines:
- `hf`: transformers `generate()` with a complete sampling config (nothing is merged in from the
  model's own generation_config.json: no repetition penalty, min_p, typical_p, top_k 50 ...), in
  micro-batches, optionally with a static KV cache;
- `hf_fast`: a KV-cache decoding loop over the same model that drops finished rows from the batch
  (a batch no longer runs at the pace of its longest response), in micro-batches;
- `vllm`: vLLM colocated in the training process (an optional extra, CUDA only), its weights
  synchronised from the policy after every PPO step, as trl's GRPO `vllm_mode="colocate"` and
  OpenRLHF's hybrid engine do. It is not exercised by the test suite (vLLM cannot be installed
  on the machines the tests run on).

Every engine returns the sampled tokens with their sampling log-probabilities, so that a test
(and the `ppo/sampling_logprob_gap` metric) can check that rollouts come from the distribution
PPO recomputes. Shapes: B = prompts, P = prompt tokens (left-padded), R = response tokens.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList

from rlhf.training.models import position_ids_from

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that defines the sampling distribution, and nothing else."""

    temperature: float
    top_p: float
    max_new_tokens: int
    stop_token_ids: tuple[int, ...]
    pad_token_id: int
    top_k: int = 0


@dataclass
class Rollout:
    """Sampled responses: tokens (B, R) padded after their end, mask (B, R) 1.0 up to and including
    the first stop token, sampling log-probabilities (B, R) float32 (0 on padding), finished (B,)."""

    response: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    generate_calls: int
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        """Response tokens sampled (the stop token included)."""
        return int(self.mask.sum().item())


class RolloutEngine(Protocol):
    """Samples one response per prompt from `model` (the policy, unwrapped)."""

    def sample(self, model: Any, query: torch.Tensor, query_mask: torch.Tensor) -> Rollout: ...

    def sync_weights(self, model: Any) -> None:
        """Called after each PPO update (engines that hold their own copy of the weights)."""


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row, or the row length when there is none: (B, T) -> (B,)."""
    T = bools.shape[-1]
    idx = torch.arange(T, device=bools.device).expand_as(bools)
    return torch.where(bools, idx, torch.full_like(idx, T)).min(dim=-1).values


def stop_mask(response: torch.Tensor, stop_token_ids: tuple[int, ...]) -> torch.Tensor:
    """1.0 on response tokens up to and including the first stop token, 0.0 after: (B, R) -> (B, R)."""
    is_stop = torch.isin(response, torch.tensor(stop_token_ids, device=response.device))
    stop_at = first_true_indices(is_stop)  # (B,)
    idx = torch.arange(response.shape[1], device=response.device).unsqueeze(0)
    return (idx <= stop_at.unsqueeze(1)).float()


def _finish(response: torch.Tensor, logprobs: torch.Tensor, settings: SamplingSettings, calls: int) -> Rollout:
    """Pad to R tokens, mask after the first stop token, mark which rows ended."""
    B, n = response.shape
    R = settings.max_new_tokens
    if n < R:
        response = torch.cat([response, response.new_full((B, R - n), settings.pad_token_id)], dim=1)
        logprobs = torch.cat([logprobs, logprobs.new_zeros((B, R - n))], dim=1)
    mask = stop_mask(response, settings.stop_token_ids)
    response = torch.where(mask.bool(), response, settings.pad_token_id)
    stops = torch.tensor(settings.stop_token_ids, device=response.device)
    finished = (torch.isin(response, stops) & mask.bool()).any(dim=1)
    return Rollout(response=response, mask=mask, logprobs=logprobs * mask, finished=finished, generate_calls=calls)


def filter_logits(scores: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of (B, V) temperature-scaled logits (-inf outside the kept set)."""
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_scores.softmax(-1) >= top_p  # keep the token that crosses top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)
    return scores


def _chunks(total: int, size: int) -> Iterator[slice]:
    size = size or total
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@contextlib.contextmanager
def _neutral_generation_config(model: Any) -> Iterator[None]:
    """generate() fills unset arguments from the model's generation_config.json; swap in a blank
    one so that the sampling distribution is exactly the one asked for."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = transformers.GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


class _SampledLogprobs(LogitsProcessor):
    """Records log softmax(scores / T) of each sampled token, holding one step's scores at a time.

    generate() runs custom processors before its temperature / top-p warpers, so the scores seen
    here are the logits after any penalty processors: exactly what a merged repetition penalty
    would change.
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.previous: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.record(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def record(self, tokens: torch.Tensor) -> None:
        assert self.previous is not None
        self.logprobs.append(self.previous.gather(1, tokens.unsqueeze(1)).squeeze(1))


class HFGenerateEngine:
    """transformers generate() with a complete sampling config, in micro-batches."""

    def __init__(self, settings: SamplingSettings, *, batch_size: int = 0, static_cache: bool = False) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.static_cache = static_cache

    def generation_config(self) -> transformers.GenerationConfig:
        """Every argument that shapes the distribution, set explicitly."""
        s = self.settings
        return transformers.GenerationConfig(
            do_sample=True,
            num_beams=1,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=None,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            length_penalty=1.0,
            min_new_tokens=0,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=list(s.stop_token_ids),
            pad_token_id=s.pad_token_id,
            cache_implementation="static" if self.static_cache else None,
        )

    @torch.no_grad()
    def sample(self, model: Any, query: torch.Tensor, query_mask: torch.Tensor) -> Rollout:
        P = query.shape[1]
        responses, logprobs, calls = [], [], 0
        for part in _chunks(query.shape[0], self.batch_size):
            recorder = _SampledLogprobs(self.settings.temperature)
            with _neutral_generation_config(model):
                sequences = model.generate(
                    input_ids=query[part],
                    attention_mask=query_mask[part],
                    generation_config=self.generation_config(),
                    logits_processor=LogitsProcessorList([recorder]),
                )  # (b, P + <=R)
            calls += 1
            response = sequences[:, P:]
            recorder.record(response[:, -1])
            responses.append(_pad_to(response, self.settings.max_new_tokens, self.settings.pad_token_id))
            logprobs.append(_pad_to(torch.stack(recorder.logprobs, dim=1), self.settings.max_new_tokens, 0.0))
        return _finish(torch.cat(responses), torch.cat(logprobs), self.settings, calls)

    def sync_weights(self, model: Any) -> None:
        """generate() reads the live policy: nothing to synchronise."""


def _pad_to(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if x.shape[1] >= width:
        return x[:, :width]
    return torch.cat([x, x.new_full((x.shape[0], width - x.shape[1]), value)], dim=1)


class HFFastEngine:
    """A KV-cache decoding loop over the policy that drops finished rows, in micro-batches.

    Sampling is written out (temperature, then top-k, then top-p, as generate() orders them), so
    its log-probabilities are the sampling distribution's by construction.
    """

    def __init__(self, settings: SamplingSettings, *, batch_size: int = 0) -> None:
        self.settings = settings
        self.batch_size = batch_size

    @torch.no_grad()
    def sample(self, model: Any, query: torch.Tensor, query_mask: torch.Tensor) -> Rollout:
        responses, logprobs, calls = [], [], 0
        for part in _chunks(query.shape[0], self.batch_size):
            response, logprob = self._decode(model, query[part], query_mask[part])
            responses.append(response)
            logprobs.append(logprob)
            calls += 1
        return _finish(torch.cat(responses), torch.cat(logprobs), self.settings, calls)

    def _decode(self, model: Any, query: torch.Tensor, query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        B, R, device = query.shape[0], s.max_new_tokens, query.device
        stops = torch.tensor(s.stop_token_ids, device=device)
        response = torch.full((B, R), s.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((B, R), dtype=torch.float32, device=device)
        alive = torch.arange(B, device=device)  # rows still decoding, as indices into the batch
        attention = query_mask
        positions = position_ids_from(query_mask)
        out = model(input_ids=query, attention_mask=attention, position_ids=positions, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]  # (b, V)
        position = positions[:, -1]
        for t in range(R):
            scores = filter_logits(logits.float() / s.temperature, top_k=s.top_k, top_p=s.top_p)
            logp = torch.log_softmax(scores, dim=-1)
            token = torch.multinomial(logp.exp(), 1).squeeze(1)  # (b,)
            response[alive, t] = token
            logprobs[alive, t] = logp.gather(1, token.unsqueeze(1)).squeeze(1)
            if t == R - 1:
                break
            keep = ~torch.isin(token, stops)
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                kept = keep.nonzero().squeeze(1)
                cache.batch_select_indices(kept)
                alive, token, attention, position = alive[kept], token[kept], attention[kept], position[kept]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
            position = position + 1
            with warnings.catch_warnings():
                # transformers >= 5.2x renames the argument `cache`; older 5.x only knows this name.
                warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
                out = model(
                    input_ids=token.unsqueeze(1),
                    attention_mask=attention,
                    position_ids=position.unsqueeze(1),
                    past_key_values=cache,
                    use_cache=True,
                )
            cache, logits = out.past_key_values, out.logits[:, -1]
        return response, logprobs

    def sync_weights(self, model: Any) -> None:
        """The loop reads the live policy: nothing to synchronise."""


class VLLMEngine:
    """vLLM colocated in this process; weights pushed from the policy after each PPO step."""

    def __init__(
        self, settings: SamplingSettings, *, model_path: str, gpu_memory_utilization: float, seed: int
    ) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:  # pragma: no cover - needs the extra
            raise ValueError("rollout_engine: vllm is not installed (pip install vllm, CUDA only)") from exc
        self.settings = settings
        self.llm = LLM(
            model=model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype="bfloat16",
            seed=seed,
            enable_prefix_caching=True,
        )
        self.params = SamplingParams(
            n=1,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k or -1,
            max_tokens=settings.max_new_tokens,
            stop_token_ids=list(settings.stop_token_ids),
            logprobs=0,  # the sampled token's log-probability
            repetition_penalty=1.0,
        )

    @torch.no_grad()
    def sample(self, model: Any, query: torch.Tensor, query_mask: torch.Tensor) -> Rollout:  # pragma: no cover
        prompts = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(query, query_mask, strict=True)]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        R, device = self.settings.max_new_tokens, query.device
        response = torch.full((len(prompts), R), self.settings.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros((len(prompts), R))
        for i, output in enumerate(outputs):
            completion = output.outputs[0]
            tokens = list(completion.token_ids)[:R]
            response[i, : len(tokens)] = torch.tensor(tokens)
            for t, (token, entry) in enumerate(zip(tokens, completion.logprobs or [], strict=False)):
                logprobs[i, t] = entry[token].logprob
        return _finish(response.to(device), logprobs.to(device), self.settings, 1)

    def sync_weights(self, model: Any) -> None:  # pragma: no cover
        """Load the policy's current weights into vLLM (LoRA merged for the copy, then unmerged)."""
        merged = hasattr(model, "merge_adapter")
        if merged:
            model.merge_adapter()
        try:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            state = {
                name.replace(".base_layer", ""): tensor
                for name, tensor in base.state_dict().items()
                if "lora_" not in name
            }
            runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
            runner.model.load_weights(state.items())
            self.llm.reset_prefix_cache()
        finally:
            if merged:
                model.unmerge_adapter()


def build_engine(
    name: str,
    settings: SamplingSettings,
    *,
    batch_size: int = 0,
    static_cache: bool = False,
    model_path: str = "",
    gpu_memory_utilization: float = 0.3,
    seed: int = 0,
) -> RolloutEngine:
    """The configured engine (PPOConfig.rollout_engine)."""
    if name == "hf":
        return HFGenerateEngine(settings, batch_size=batch_size, static_cache=static_cache)
    if name == "hf_fast":
        return HFFastEngine(settings, batch_size=batch_size)
    if name == "vllm":
        if not torch.cuda.is_available():
            raise ValueError("rollout_engine: vllm needs a CUDA device")
        return VLLMEngine(
            settings, model_path=model_path, gpu_memory_utilization=gpu_memory_utilization, seed=seed
        )  # pragma: no cover
    raise ValueError(f"rollout_engine: unknown engine {name!r} (expected hf, hf_fast or vllm)")
