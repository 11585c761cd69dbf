"""Configuration: one dataclass per stage plus the loop's, loaded from YAML.

    from resume.config import load_config
    cfg = load_config("configs/demo.yaml", overrides=["grpo.max_steps=2"])

Every field is typed; `from_dict` checks types, `Literal` choices and unknown keys, and each stage
config checks its cross-field rules in `__post_init__`. Errors are `ConfigError`s whose message names
the key, the bad value and what is allowed, e.g.

    configs/x.yaml: grpo.learnig_rate: unknown key; valid keys: beta, learning_rate, ...
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from resume.errors import ConfigError

SYSTEMS = ("baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control", "iterative_fused", "lead",
           "lead_fused", "fixed_summary_titled", "iterative_titled", "iterative_titled_fused")
ABLATIONS = ("no_retrieval_adaptation", "no_negative_queries", "continuous_reward")


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: invalid value {value!r}; expected {allowed}")


@dataclass
class DataConfig:
    """Which collection to use and which part of it: the source, a working set for CPU budgets (`None` =
    everything), and an optional out-of-distribution collection."""

    path: str = field(default="data/cranfield", metadata={"help": (
        "The collection: a BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or "
        "`hf:<dataset name>` for a hub dataset (BEIR names, `msmarco`), loaded through `datasets`.")})
    train_split: str = field(default="train", metadata={"help": (
        "Qrels split of the training queries: GRPO prompts and retriever adaptation.")})
    dev_split: str = field(default="dev", metadata={"help": (
        "Qrels split for early stopping on the metric and for choosing fusion weights.")})
    test_split: str = field(default="test", metadata={"help": "Qrels split of the final results table."})
    max_train_queries: int | None = field(default=None, metadata={"help": (
        "Use at most this many training queries (seeded sample); null = all.")})
    max_eval_queries: int | None = field(default=None, metadata={"help": (
        "Use at most this many queries of each evaluation split (seeded sample); null = all.")})
    distractors: int | None = field(default=None, metadata={"help": (
        "Keep every document judged for the chosen queries plus this many sampled others; null keeps the "
        "whole corpus.")})
    seed: int = field(default=13, metadata={"help": "Seed of the query and distractor samples."})
    ood: str | None = field(default=None, metadata={"help": (
        "A second BEIR-layout directory (or `hf:<dataset name>`), e.g. `data/medline`, on which the models "
        "trained on `path` are evaluated out of distribution, with no further training; null = no OOD "
        "evaluation. A local path that does not exist is reported when the run starts, not when the "
        "config loads.")})
    ood_split: str = field(default="test", metadata={"help": (
        "The qrels split of `ood` that is evaluated (`data/medline` has only `test`).")})
    ood_max_queries: int | None = field(default=None, metadata={"help": (
        "An OOD working set: at most this many `ood_split` queries (seeded by `seed`; materialised once as "
        "<run_dir>/ood/data); null = all.")})
    ood_distractors: int | None = field(default=None, metadata={"help": (
        "An OOD working set: the documents judged for its queries plus this many others; null = the whole "
        "OOD corpus.")})

    def __post_init__(self):
        for k in ("max_train_queries", "max_eval_queries", "distractors", "ood_max_queries", "ood_distractors"):
            v = getattr(self, k)
            _check(v is None or v >= 0, f"data.{k}", v, "a non-negative integer or null")
        _check(self.ood is None or bool(self.ood.strip()), "data.ood", self.ood,
               "a BEIR directory, hf:<dataset name>, or null")
        _check(bool(self.ood_split.strip()), "data.ood_split", self.ood_split, "a non-empty split name")


@dataclass
class RetrieverConfig:
    """The dense retriever g: encoder, pooling and encoding settings."""

    model: str = field(default="all-minilm-l6-v2", metadata={"help": (
        "Retriever g_0: hub id (`facebook/contriever`), local dir, or packaged short name (`all-minilm-l6-v2`, "
        "`tiny-encoder`); see `resume.models`.")})
    pooling: Literal["mean", "cls"] = field(default="mean", metadata={"help": (
        "How token embeddings become one vector: `mean` (Contriever, MiniLM) or `cls`.")})
    normalize: bool = field(default=True, metadata={"help": (
        "L2-normalise embeddings (then inner product = cosine).")})
    max_length: int = field(default=256, metadata={"help": (
        "Truncation length in tokens for queries and documents.")})
    query_prefix: str = field(default="", metadata={"help": (
        "String prepended to every query before encoding (e5-style models need one).")})
    doc_prefix: str = field(default="", metadata={"help": (
        "String prepended to every document or summary before encoding.")})
    batch_size: int = field(default=64, metadata={"help": "Encoding batch size."})
    dtype: Literal["auto", "native", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": (
        "Weights dtype: `auto` = bf16 on GPU, fp32 on CPU; `native` = bf16 on GPU and on CPUs with bf16 "
        "instructions (AMX or AVX512-BF16), fp32 on other CPUs.")})

    def __post_init__(self):
        _check(self.max_length > 0, "retriever.max_length", self.max_length, "a positive integer")
        _check(self.batch_size > 0, "retriever.batch_size", self.batch_size, "a positive integer")


# The default user prompts of `summarizer.reasoning` (docs/DESIGN.md "Summary format"): plain instructions,
# no bracketed placeholders, no numbers (SmolLM2-135M copied "48 to 96 words" into its summaries). Measured
# on 64 held-out Cranfield training documents with g_0: bench/summary_format.json.
DEFAULT_PROMPTS = {
    "think": (
        "Write a summary of the document below for a search engine, {min_words} to {max_words} words, keeping "
        "its key technical terms. First think briefly about its key terms and the questions a searcher would "
        "ask, end your thinking with {separator}, then write the summary.\n\nDocument:\n{document}"
    ),
    "skip": "{document}\n\nSummarize the text above in three sentences, using its technical terms.",
}


@dataclass
class SummarizerConfig:
    """The summarizer f and corpus summarisation (summarize-corpus): the model, the prompt, and greedy
    generation (corpus summaries are greedy, as in the paper)."""

    model: str = field(default="smollm2-135m-instruct", metadata={"help": (
        "Summarizer f_0: hub id (`Qwen/Qwen3-4B-Thinking-2507`), local dir, or packaged short name "
        "(`smollm2-135m-instruct`, `tiny-causal-lm`).")})
    thinking: Literal["auto", True, False] = field(default="auto", metadata={"help": (
        "Whether the chat template is a thinking one: `auto` detects a template that prefills `<think>`; "
        "true/false force it.")})
    separator: str = field(default="</think>", metadata={"help": (
        "The tag that ends the reasoning; the summary is the text after its last occurrence.")})
    reasoning: Literal["think", "skip"] = field(default="think", metadata={"help": (
        "`think` (the paper: the model reasons, closes the tag, then writes the summary) or `skip` (the "
        "generation prompt is prefilled with an EMPTY reasoning block `<think>\\n\\n</think>\\n\\n`, so every "
        "generated token goes to the summary and the separator is always there; for small non-thinking "
        "models, see docs/DESIGN.md \"Summary format\").")})
    prompt: str = field(default="", metadata={"help": (
        "User-message template with `{document}`; `{min_tokens}`/`{max_tokens}` are filled from the reward "
        "config, `{min_words}`/`{max_words}` with 3/4 of them (a model counts words better than tokens). "
        "Empty = the default prompt of the `reasoning` mode (`DEFAULT_PROMPTS`); no bracketed placeholders "
        "(SmolLM2-135M copied `[summary]` into every summary).")})
    prefill_think: bool = field(default=True, metadata={"help": (
        "(`reasoning: think`) For a template that does not prefill `<think>` itself, append `<think>\\n` to "
        "the generation prompt, so every completion has the shape `reasoning</think>summary` "
        "(SmolLM2-135M-Instruct wrote the separator in 0 of 8 Cranfield documents without it, 8 of 8 with "
        "it). false: the model opens and closes the tags itself. With `reasoning: skip`, false leaves the "
        "reasoning block out: the prompt ends with the separator alone (e.g. `separator: 'Summary:'` for a "
        "model that never saw reasoning tags).")})
    max_doc_tokens: int = field(default=512, metadata={"help": (
        "Documents are truncated to this many summarizer tokens inside the prompt.")})
    max_new_tokens: int = field(default=256, metadata={"help": (
        "Most tokens generated per corpus summary (reasoning included).")})
    batch_size: int = field(default=16, metadata={"help": "Generation batch size (documents per batch)."})
    dtype: Literal["auto", "native", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": (
        "Weights dtype: `auto` = bf16 on GPU, fp32 on CPU; `native` = bf16 on GPU and on CPUs with bf16 "
        "instructions (AMX or AVX512-BF16), fp32 on other CPUs.")})
    backend: Literal["hf", "vllm"] = field(default="hf", metadata={"help": (
        "Generation backend: `hf` (transformers) or `vllm` (where installed).")})
    no_repeat_ngram_size: int = field(default=0, metadata={"help": (
        "> 0 bans repeating an n-gram of the summary itself (the document's n-grams stay allowed; "
        "`resume.summarizer.GeneratedNoRepeatNGram`): against greedy loops of small models. `hf` backend "
        "only; 0 = off.")})
    fallback: Literal["completion", "document"] = field(default="completion", metadata={"help": (
        "What the index gets when a completion has no separator: `completion` (the whole completion, "
        "stripped of `<think>` tags) or `document` (the document text, truncated).")})

    def __post_init__(self):
        _check(bool(self.separator.strip()), "summarizer.separator", self.separator, "a non-empty tag")
        _check(not self.prompt or "{document}" in self.prompt, "summarizer.prompt", self.prompt[:40] + "...",
               "a template containing {document} (or empty for the default prompt)")
        for k in ("max_doc_tokens", "max_new_tokens", "batch_size"):
            _check(getattr(self, k) > 0, f"summarizer.{k}", getattr(self, k), "a positive integer")
        _check(self.no_repeat_ngram_size >= 0, "summarizer.no_repeat_ngram_size", self.no_repeat_ngram_size,
               "a non-negative integer (0 = off)")
        _check(not (self.no_repeat_ngram_size and self.backend == "vllm"), "summarizer.no_repeat_ngram_size",
               self.no_repeat_ngram_size, "0 with backend vllm (the option is implemented for the hf backend)")


@dataclass
class RewardConfig:
    """The reward of DESIGN §1.1 (StructureReward + r_phi). Lengths are token counts under the retriever's
    tokenizer, no special tokens: min_tokens..max_tokens -> in_range; max_tokens < n <= over_limit ->
    slightly_over; n < min_tokens -> under; n > over_limit -> far_over; no separator -> missing_separator
    (and r_phi = -1 too)."""

    min_tokens: int = field(default=64, metadata={"help": "Shortest summary length (tokens) scored `in_range`."})
    max_tokens: int = field(default=128, metadata={"help": "Longest summary length (tokens) scored `in_range`."})
    over_limit: int = field(default=160, metadata={"help": (
        "Up to this many tokens a summary is `slightly_over`; longer ones are `far_over`.")})
    in_range: float = field(default=1.0, metadata={"help": "Structure reward of a summary of the right length."})
    slightly_over: float = field(default=0.9, metadata={"help": (
        "Structure reward of a summary between max_tokens and over_limit.")})
    under: float = field(default=0.3, metadata={"help": "Structure reward of a summary shorter than min_tokens."})
    far_over: float = field(default=0.0, metadata={"help": (
        "Structure reward of a summary longer than over_limit (our choice: it bloats the index and is "
        "truncated by the retriever anyway, so it earns less than a short one).")})
    missing_separator: float = field(default=-1.0, metadata={"help": (
        "Structure reward of a completion without the separator (its retrieval reward is -1 too).")})
    discrete: bool = field(default=True, metadata={"help": (
        "Map Delta = RetScore(summary) - RetScore(document) through the paper's bins; false = the "
        "\"w/o discrete reward\" ablation (Delta itself).")})
    use_negatives: bool = field(default=True, metadata={"help": (
        "Score against negative queries too; false = the \"w/o negative queries\" ablation.")})
    num_negatives: int = field(default=8, metadata={"help": (
        "Negative queries per document, sampled uniformly from the training queries minus the document's "
        "positives (seeded).")})
    clamp_negative: bool = field(default=True, metadata={"help": (
        "Clamp cosine similarities at 0 before RetScore (a zero denominator gives 0).")})
    seed: int = field(default=0, metadata={"help": "Seed of the negative-query samples."})
    summary_title: bool = field(default=False, metadata={"help": (
        "Score each summary after its document's title (`resume.lead.join_title`), the view that "
        "`evaluate.summary_title` indexes, so GRPO learns what the title does not already say (beyond the "
        "paper, which scores the summary alone; the structure reward still counts the summary's own tokens). "
        "The fixed judge scores the same view.")})

    def __post_init__(self):
        _check(0 < self.min_tokens <= self.max_tokens <= self.over_limit, "reward.min_tokens/max_tokens/over_limit",
               (self.min_tokens, self.max_tokens, self.over_limit), "0 < min_tokens <= max_tokens <= over_limit")
        _check(self.num_negatives >= 0, "reward.num_negatives", self.num_negatives, "a non-negative integer")


@dataclass
class GRPOConfig:
    """GRPO training of the summarizer with TRL's `GRPOTrainer` (grpo-train). The paper: batch 128, 200
    steps, lr 3e-7, beta 0.5, where "batch 128" = completions per optimiser step =
    per_device_train_batch_size x gradient_accumulation_steps x world size (Ray workers); prompts per step =
    that product / num_generations."""

    learning_rate: float = field(default=3e-7, metadata={"help": "Learning rate of the summarizer (paper: 3e-7)."})
    max_steps: int = field(default=200, metadata={"help": "Optimiser steps per GRPO round (paper: 200)."})
    beta: float = field(default=0.5, metadata={"help": "TRL's KL coefficient against the reference model (paper: 0.5)."})
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = field(default="grpo", metadata={"help": (
        "TRL's loss: `grpo` as in the paper; TRL recommends `dapo` or `dr_grpo` for short completions (no "
        "per-sequence length normalisation).")})
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", metadata={"help": (
        "TRL's advantage scaling: `group` (divide by the group's reward std, the paper's GRPO), `batch`, or "
        "`none` (Dr. GRPO: no std division).")})
    mask_truncated_completions: bool = field(default=False, metadata={"help": (
        "Leave completions cut by max_completion_length out of the loss (DAPO): a cut summary is not a "
        "summary.")})
    per_device_train_batch_size: int = field(default=8, metadata={"help": (
        "Completions per device per micro-batch.")})
    gradient_accumulation_steps: int = field(default=16, metadata={"help": (
        "Micro-batches per optimiser step.")})
    num_generations: int = field(default=8, metadata={"help": (
        "Completions per prompt (the group whose rewards give the advantages); must divide "
        "per_device_train_batch_size x gradient_accumulation_steps.")})
    max_completion_length: int = field(default=256, metadata={"help": (
        "Most tokens generated per completion during training.")})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature during training."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold during training."})
    bf16: bool | None = field(default=None, metadata={"help": (
        "null = bf16 mixed precision on a GPU (when summarizer.dtype allows), fp32 on CPU; true = bf16 "
        "autocast on CPU too (worth it where the CPU has AMX or AVX512-BF16); false = fp32.")})
    max_train_docs: int | None = field(default=None, metadata={"help": (
        "Cap on the GRPO prompt set (seeded sample); null = every training document with at least one "
        "positive query.")})
    judge_docs: int = field(default=64, metadata={"help": (
        "Training documents held out of GRPO for the fixed judge (`resume.quality.fixed_judge`; at most half "
        "of them; 0 = none).")})
    logging_steps: int = field(default=1, metadata={"help": "Log (reward log, MLflow) every this many steps."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every this many steps (a rerun resumes)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": (
        "Recompute activations in the backward pass (less memory, more time).")})
    share_prompt: bool = field(default=True, metadata={"help": (
        "Run each group's prompt once in the rollouts and the loss and let its completions share the key/value "
        "cache (`resume.shared_prompt`): the same log-probabilities and gradients as TRL's path, a 1.7x faster "
        "step on CPU (bench/README.md); false = TRL's own path.")})
    rollout_dtype: Literal["policy", "bfloat16", "float16"] = field(default="policy", metadata={"help": (
        "`policy`: the rollouts come from the trained weights themselves (TRL's way). `bfloat16`/`float16`: "
        "from a copy in that dtype, refreshed after every optimiser step, while the loss and the optimiser "
        "stay in the policy's dtype (`resume.shared_prompt.low_precision_rollouts`; TRL's split with vLLM "
        "rollouts). Changes the sampled rollouts; worth it on a CPU with AVX512-BF16 or AMX.")})
    cpu_malloc: Literal["retain", "system"] = field(default="retain", metadata={"help": (
        "On CPU, `retain`: glibc keeps freed memory in the process instead of unmapping and re-faulting the "
        "step's large tensors every micro-batch (`resume.models.cpu_malloc`; same computation, a faster loss "
        "forward and backward, resident memory stays at its peak); `system`: the allocator as it is.")})
    launcher: Literal["local", "ray"] = field(default="local", metadata={"help": (
        "`local` (TRL/accelerate in this process) or `ray` (Ray Train TorchTrainer).")})
    ray_address: str | None = field(default=None, metadata={"help": (
        "Ray cluster: null or `local` starts Ray on this machine; `ray://head:10001` or `auto` joins one.")})
    num_workers: int = field(default=1, metadata={"help": "Ray Train workers (launcher `ray`)."})
    use_gpu: bool = field(default=False, metadata={"help": "Give each Ray worker a GPU (launcher `ray`)."})
    seed: int = field(default=42, metadata={"help": (
        "Seed of the trainer (sampling, data order) and of the max_train_docs and judge_docs samples.")})

    def __post_init__(self):
        _check(self.learning_rate > 0, "grpo.learning_rate", self.learning_rate, "a positive float")
        _check(self.max_steps > 0, "grpo.max_steps", self.max_steps, "a positive integer")
        _check(self.beta >= 0, "grpo.beta", self.beta, "a non-negative float")
        _check(self.num_generations >= 2, "grpo.num_generations", self.num_generations,
               "an integer >= 2 (GRPO needs a group to compute advantages)")
        gen_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if gen_batch % self.num_generations:
            raise ConfigError(
                f"grpo: per_device_train_batch_size x gradient_accumulation_steps ({gen_batch}) must be "
                f"divisible by num_generations ({self.num_generations})"
            )
        _check(self.num_workers >= 1, "grpo.num_workers", self.num_workers, "a positive integer")
        _check(self.judge_docs >= 0, "grpo.judge_docs", self.judge_docs, "a non-negative integer")


@dataclass
class FinetuneConfig:
    """Contrastive adaptation of the retriever on (query, summary of a relevant document) pairs: InfoNCE with
    in-batch negatives gathered across DDP ranks, cosine / temperature; `nproc` processes under `torchrun`
    (gloo on CPU, NCCL on GPU); a rerun resumes from the last checkpoint."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (paper: 1e-5)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps with a linear warm-up."})
    epochs: int = field(default=1, metadata={"help": "Passes over the training pairs (unless max_steps)."})
    max_steps: int | None = field(default=None, metadata={"help": (
        "Optimiser steps per round; null = `epochs` passes over the pairs.")})
    batch_size: int = field(default=32, metadata={"help": "Pairs per step per rank (the in-batch negatives)."})
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature (Contriever-style 0.05)."})
    hard_negatives: int = field(default=0, metadata={"help": (
        "Hard negatives per query, mined once with the round's initial retriever; 0 = none, as in the paper.")})
    views: Literal["summary", "both"] = field(default="summary", metadata={"help": (
        "What a summary-trained round pairs each query with: `summary` (the paper: the relevant document's "
        "summary) or `both` (the summary and the full document, two pairs per judgement; for the fused "
        "index, which searches both views). No effect where the retriever trains on full documents.")})
    nproc: int = field(default=1, metadata={"help": (
        "DDP processes under torchrun; 1 runs in this process.")})
    checkpoint_steps: int = field(default=50, metadata={"help": "Checkpoint every this many steps."})
    seed: int = field(default=42, metadata={"help": (
        "Seed of the pair order, of dropout (per rank) and of the fixed batch the loss is logged on.")})

    def __post_init__(self):
        _check(self.learning_rate > 0, "finetune.learning_rate", self.learning_rate, "a positive float")
        _check(self.temperature > 0, "finetune.temperature", self.temperature, "a positive float")
        _check(self.batch_size >= 2, "finetune.batch_size", self.batch_size,
               "an integer >= 2 (in-batch negatives need a batch)")
        _check(self.nproc >= 1, "finetune.nproc", self.nproc, "a positive integer")
        _check(self.max_steps is None or self.max_steps > 0, "finetune.max_steps", self.max_steps,
               "a positive integer or null")


@dataclass
class EvalConfig:
    """Evaluation: FAISS search and trec_eval metrics (MRR@10, NDCG@10, R@100, R@1000), and what each
    document is indexed as (`resume.evaluate`; with no summaries, every mode but `summary` is an error, and
    `summary` indexes the full documents: the Baseline)."""

    index: Literal["flat", "ivf", "hnsw", "auto"] = field(default="auto", metadata={"help": (
        "`auto` (`flat`, exact inner product, below `auto_min_docs` indexed vectors, `ivf` from there on), "
        "`flat`, `ivf` or `hnsw` (approximate). The defaults keep recall@100 >= 0.99 of exact search at "
        "10k-1M vectors (bench/bench_scaling.py, bench/scaling.json; `resume.index.choose_kind`).")})
    k: int = field(default=1000, metadata={"help": "Depth of the run file (hits per query)."})
    auto_min_docs: int = field(default=100_000, metadata={"help": (
        "Index `auto`: indexed vectors from which IVF replaces the flat index.")})
    nlist: int | None = field(default=None, metadata={"help": (
        "IVF lists; null = 2 * sqrt(n), clamped to n // 39.")})
    nprobe: int = field(default=64, metadata={"help": "IVF lists searched per query."})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW neighbours per node."})
    ef_search: int = field(default=4096, metadata={"help": (
        "HNSW search breadth; a search returns at most max(ef_search, k) candidates, so ef_search below k is "
        "raised to k.")})
    ef_construction: int = field(default=40, metadata={"help": "HNSW construction breadth."})
    gpu: Literal["auto", True, False] = field(default="auto", metadata={"help": (
        "Use GPU FAISS: `auto` = when present.")})
    mode: Literal["summary", "fused", "long_only"] = field(default="summary", metadata={"help": (
        "`summary` (the paper: one vector per document, its summary); `fused` (two views, the full document "
        "and its summary, searched separately at k and fused over the union of candidates); `long_only` (the "
        "summary only for documents longer than the retriever's window, i.e. more than retriever max_length "
        "minus its special tokens, counted without special tokens; else the document). An index of full "
        "documents alone (the Baseline, no summaries) is searched as it is, whatever the mode.")})
    fusion: Literal["score", "rrf"] = field(default="score", metadata={"help": (
        "Mode `fused`: `score` = fusion_weight * cos(q, document) + (1 - fusion_weight) * cos(q, summary), "
        "both cosines exact for every candidate; `rrf` = sum over the two ranked lists of 1 / (rrf_k + rank) "
        "(a list that misses the document adds 0).")})
    fusion_weight: float | None = field(default=None, metadata={"help": (
        "The document view's weight in [0, 1]; null = chosen by the caller on the dev split "
        "(`resume.evaluate.choose_fusion_weight`, `resume evaluate --choose-weight-on dev`).")})
    rrf_k: int = field(default=60, metadata={"help": "The RRF constant (60 as in Cormack et al., 2009)."})
    summary_title: bool = field(default=False, metadata={"help": (
        "Index each summary with its document's title before it (`resume.lead.join_title`; every mode, "
        "wherever a summary is indexed). Beyond the paper, which indexes the summary alone: the loop's "
        "`*_titled` systems set it for their rows and leave the paper's rows as they are. A document without "
        "a title keeps its summary. As a config default it is the served and `resume evaluate` index; an "
        "index of full documents (the Baseline, no summaries) ignores it.")})

    def __post_init__(self):
        _check(self.k >= 10, "evaluate.k", self.k, "an integer >= 10 (MRR@10 needs the top 10)")
        _check(self.auto_min_docs >= 1, "evaluate.auto_min_docs", self.auto_min_docs, "a positive integer")
        _check(self.nlist is None or self.nlist >= 1, "evaluate.nlist", self.nlist, "a positive integer or null")
        for key in ("nprobe", "hnsw_m", "ef_search", "ef_construction"):
            _check(getattr(self, key) >= 1, f"evaluate.{key}", getattr(self, key), "a positive integer")
        w = self.fusion_weight
        _check(w is None or 0.0 <= w <= 1.0, "evaluate.fusion_weight", w, "a number in [0, 1] or null")
        _check(self.rrf_k >= 0, "evaluate.rrf_k", self.rrf_k, "a non-negative integer")


@dataclass
class LoopConfig:
    """Algorithm 1 and the systems compared. Early stopping is decided after an iteration has completed
    (`resume.run_dir.early_stop`); either rule stops the loop."""

    max_iterations: int = field(default=10, metadata={"help": "Most iterations of the loop (paper: at most 10)."})
    eps_reward: float | None = field(default=0.01, metadata={"help": (
        "Stop when the mean GRPO reward improves by less than this over the previous round (from round 2); "
        "null disables the rule.")})
    eps_metric: float | None = field(default=0.005, metadata={"help": (
        "Stop when the dev-split MRR@10 improves by less than this over the previous iteration (iteration 0 "
        "= g_0 over S_0); null disables the rule.")})
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS), metadata={"help": (
        "Any of baseline, fixed_summary, non_iterative, iterative, full_doc_control (the paper's rows and the "
        "control it lacks), iterative_fused (S_T and the documents as two views of one index, g_T, the "
        "document weight chosen on dev), lead and lead_fused (title + first sentence, no LLM, with g_0: "
        "alone and fused with the document the same way), fixed_summary_titled, iterative_titled and "
        "iterative_titled_fused (Fixed Summary, Iterative and Iterative + fused with each summary indexed "
        "after its document's title, `evaluate.summary_title`; beyond the paper).")})
    ablations: list[str] = field(default_factory=list, metadata={"help": (
        "Any of no_retrieval_adaptation, no_negative_queries, continuous_reward (each a loop of its own).")})
    seed: int = field(default=42, metadata={"help": (
        "Seed of python, numpy and torch, set before every stage (a resumed run gives the same numbers).")})

    def __post_init__(self):
        _check(1 <= self.max_iterations <= 100, "loop.max_iterations", self.max_iterations, "an integer in 1..100")
        for s in self.systems:
            _check(s in SYSTEMS, "loop.systems", s, f"one of {', '.join(SYSTEMS)}")
        for a in self.ablations:
            _check(a in ABLATIONS, "loop.ablations", a, f"one of {', '.join(ABLATIONS)}")


@dataclass
class TrackingConfig:
    """MLflow tracking and registry."""

    tracking_uri: str | None = field(default=None, metadata={"help": (
        "MLflow tracking URI; null = $MLFLOW_TRACKING_URI, else a sqlite file in the run directory.")})
    experiment: str = field(default="resume", metadata={"help": "MLflow experiment name."})
    register: bool = field(default=True, metadata={"help": (
        "Register the final models at the end of `resume run`.")})
    summarizer_name: str = field(default="resume-summarizer", metadata={"help": (
        "Registered model name of the summarizer f_T.")})
    retriever_name: str = field(default="resume-retriever", metadata={"help": (
        "Registered model name of the retriever g_T.")})
    alias: str = field(default="champion", metadata={"help": (
        "The alias moved to the registered versions when they beat the current holder's test MRR@10.")})


@dataclass
class ResumeConfig:
    """The whole run: one section per stage."""

    name: str = field(default="resume", metadata={"help": "Name of the run (the report's title, MLflow tags)."})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": (
        "Where models run: `auto` = CUDA when available, else CPU.")})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "The collection and the working set."})
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig, metadata={"help": "The retriever g."})
    summarizer: SummarizerConfig = field(default_factory=SummarizerConfig, metadata={"help": (
        "The summarizer f and corpus summarisation.")})
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "The GRPO reward."})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "GRPO training of the summarizer."})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={"help": (
        "Contrastive adaptation of the retriever.")})
    evaluate: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Indexing, search and metrics."})
    loop: LoopConfig = field(default_factory=LoopConfig, metadata={"help": (
        "Algorithm 1: iterations, early stopping, systems and ablations.")})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow tracking and registry."})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# YAML / dict loading with typed validation


_EXP_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value) for `value` against the annotation `tp`."""
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):
            return True, float(value)  # `1e-6`: YAML 1.1 (PyYAML) reads a float without a dot as a string
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, item_tp)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    return True, value


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_describe(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrongly typed values."""
    data = data or {}
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key; valid keys: {', '.join(sorted(names))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, f"{prefix}{key}.")
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"{prefix}{key}: invalid value {value!r}; expected {_describe(tp)}")
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(prefix) or not prefix else f"{e}") from None


def config_keys(cls: type = ResumeConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every key of the config, in declaration order: (dotted key, type, default, help) from the fields'
    annotations, defaults and `metadata["help"]` (sections themselves are not listed, their keys are)."""
    hints = get_type_hints(cls)
    out: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_keys(tp, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append((f"{prefix}{f.name}", _describe(tp), default, f.metadata.get("help", "")))
    return out


def format_config_help(width: int = 100) -> str:
    """`resume run --help-config`: each key with its type, default (as YAML writes it) and meaning, by section."""
    import json
    import textwrap

    hints = get_type_hints(ResumeConfig)
    lines = ["Config keys (YAML sections, or --set KEY=VALUE); defaults as in `resume.config`:", ""]
    section = None
    for key, tp, default, help_ in config_keys():
        head = key.split(".")[0] if "." in key else ""
        if head != section:
            section = head
            if head:
                sec = next(f for f in dataclasses.fields(ResumeConfig) if f.name == head)
                lines += ["", f"{head}:  {sec.metadata.get('help', '')} ({hints[head].__name__})"]
        lines.append(f"  {key} = {json.dumps(default)}  ({tp})")
        lines += textwrap.wrap(help_, width, initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines) + "\n"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"grpo": {"beta": 0.5}}` -> `{"grpo.beta": 0.5}` (the dotted keys of `--set` and MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _apply_override(data: dict[str, Any], override: str) -> None:
    import yaml

    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. grpo.max_steps=2")
    key, raw = override.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ResumeConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply `a.b=value` overrides."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    for o in overrides or []:
        _apply_override(data, o)
    try:
        return from_dict(ResumeConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def dump_config(cfg: ResumeConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    import yaml

    from resume.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False))
