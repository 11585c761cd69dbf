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
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from resume.errors import ConfigError

SYSTEMS = ("baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control", "iterative_fused", "lead",
           "lead_fused")
ABLATIONS = ("no_retrieval_adaptation", "no_negative_queries", "continuous_reward")


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: invalid value {value!r}; expected {allowed}")


@dataclass
class DataConfig:
    """Which collection to use and which part of it.

    Source:
        path: a BEIR-layout directory (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) or
            `hf:<dataset name>` for a hub dataset (BEIR names, `msmarco`), loaded through `datasets`.
        train_split / dev_split / test_split: qrels split names for GRPO + retriever adaptation, early
            stopping, and the final table.
    Working set (CPU budgets; `None` = everything):
        max_train_queries / max_eval_queries: use at most this many queries per split (seeded sample).
        distractors: keep every document judged for the chosen queries plus this many sampled others;
            `None` keeps the whole corpus.
        seed: seed of the samples above.
    Out of distribution:
        ood: a second BEIR-layout directory (or `hf:<dataset name>`), e.g. `data/medline`, on which the
            models trained on `path` are evaluated out of distribution, with no further training;
            `None` = no OOD evaluation. A local path that does not exist is reported when the run
            starts, not when the config loads.
        ood_split: the qrels split of `ood` that is evaluated (`data/medline` has only `test`).
        ood_max_queries / ood_distractors: an OOD working set, as max_eval_queries / distractors do for
            `path` (seeded by `seed`; materialised once as <run_dir>/ood/data); `None` = all of it.
    """

    path: str = "data/cranfield"
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    max_train_queries: int | None = None
    max_eval_queries: int | None = None
    distractors: int | None = None
    seed: int = 13
    ood: str | None = None
    ood_split: str = "test"
    ood_max_queries: int | None = None
    ood_distractors: int | None = None

    def __post_init__(self):
        for k in ("max_train_queries", "max_eval_queries", "distractors", "ood_max_queries", "ood_distractors"):
            v = getattr(self, k)
            _check(v is None or v >= 0, f"data.{k}", v, "a non-negative integer or null")
        _check(self.ood is None or bool(self.ood.strip()), "data.ood", self.ood,
               "a BEIR directory, hf:<dataset name>, or null")
        _check(bool(self.ood_split.strip()), "data.ood_split", self.ood_split, "a non-empty split name")


@dataclass
class RetrieverConfig:
    """The dense retriever g: encoder, pooling and encoding settings.

    model: hub id (`facebook/contriever`), local dir, or packaged short name (`all-minilm-l6-v2`,
        `tiny-encoder`); see `resume.models`.
    pooling: `mean` (Contriever, MiniLM) or `cls`.
    normalize: L2-normalise embeddings (then inner product = cosine).
    max_length: truncation length in tokens for queries and documents.
    query_prefix / doc_prefix: strings prepended before encoding (e5-style models need them).
    batch_size: encoding batch size.
    dtype: `auto` = bf16 on GPU, fp32 on CPU.
    """

    model: str = "all-minilm-l6-v2"
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    max_length: int = 256
    query_prefix: str = ""
    doc_prefix: str = ""
    batch_size: int = 64
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

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
    """The summarizer f and corpus summarisation (summarize-corpus).

    Model:
        model: hub id (`Qwen/Qwen3-4B-Thinking-2507`), local dir, or packaged short name
            (`smollm2-135m-instruct`, `tiny-causal-lm`).
        thinking: `auto` detects a template that prefills `<think>`; `true`/`false` force it.
    Prompt:
        separator: the tag that ends the reasoning; the summary is the text after its last occurrence.
        reasoning: `think` (the paper: the model reasons, closes the tag, then writes the summary) or
            `skip` (the generation prompt is prefilled with an EMPTY reasoning block
            `<think>\n\n</think>\n\n`, so every generated token goes to the summary and the separator
            is always there; for small non-thinking models, see docs/DESIGN.md "Summary format").
        prompt: user-message template with `{document}`; `{min_tokens}`/`{max_tokens}` are filled from
            the reward config, `{min_words}`/`{max_words}` with 3/4 of them (a model counts words better
            than tokens). Empty = the default prompt of the `reasoning` mode (`DEFAULT_PROMPTS`); no
            bracketed placeholders (SmolLM2-135M copied `[summary]` into every summary).
        max_doc_tokens: documents are truncated to this many summarizer tokens inside the prompt.
        prefill_think: (`reasoning: think`) for a template that does not prefill `<think>` itself, append
            `<think>\n` to the generation prompt, so every completion has the thinking shape
            `reasoning</think>summary` (SmolLM2-135M-Instruct wrote the separator in 0 of 8 Cranfield
            documents without it, 8 of 8 with it). `false`: the model opens and closes the tags itself.
    Generation (greedy for corpus summaries, as in the paper):
        max_new_tokens, batch_size, dtype, backend (`hf`, or `vllm` where installed).
        no_repeat_ngram_size: > 0 bans repeating an n-gram of the summary itself (the document's n-grams
            stay allowed; `resume.summarizer.GeneratedNoRepeatNGram`): greedy loops of small models. `hf`
            backend only; 0 = off.
        fallback: what the index gets when a completion has no separator: `completion` (the whole
            completion, stripped of `<think>` tags) or `document` (the document text, truncated).
    """

    model: str = "smollm2-135m-instruct"
    thinking: Literal["auto", True, False] = "auto"
    separator: str = "</think>"
    reasoning: Literal["think", "skip"] = "think"
    prompt: str = ""
    prefill_think: bool = True
    max_doc_tokens: int = 512
    max_new_tokens: int = 256
    batch_size: int = 16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    backend: Literal["hf", "vllm"] = "hf"
    no_repeat_ngram_size: int = 0
    fallback: Literal["completion", "document"] = "completion"

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
    """The reward of DESIGN §1.1 (StructureReward + r_phi).

    Structure (token counts under the retriever's tokenizer, no special tokens):
        min_tokens..max_tokens -> in_range (1.0); max_tokens < n <= over_limit -> slightly_over (0.9);
        n < min_tokens -> under (0.3); n > over_limit -> far_over (0.0, our choice: a summary past
        the limit bloats the index and is truncated by the retriever anyway, so it earns less than
        a short one); missing separator -> missing_separator (-1.0, and r_phi = -1 too).
    Retrieval:
        discrete: map Delta through the paper's bins; `false` = the "w/o discrete reward" ablation.
        use_negatives / num_negatives: negative queries sampled uniformly from the training queries
            minus the document's positives (seeded); `use_negatives: false` = "w/o negative queries".
        clamp_negative: clamp cosine similarities at 0 before RetScore (a zero denominator gives 0).
    """

    min_tokens: int = 64
    max_tokens: int = 128
    over_limit: int = 160
    in_range: float = 1.0
    slightly_over: float = 0.9
    under: float = 0.3
    far_over: float = 0.0
    missing_separator: float = -1.0
    discrete: bool = True
    use_negatives: bool = True
    num_negatives: int = 8
    clamp_negative: bool = True
    seed: int = 0

    def __post_init__(self):
        _check(0 < self.min_tokens <= self.max_tokens <= self.over_limit, "reward.min_tokens/max_tokens/over_limit",
               (self.min_tokens, self.max_tokens, self.over_limit), "0 < min_tokens <= max_tokens <= over_limit")
        _check(self.num_negatives >= 0, "reward.num_negatives", self.num_negatives, "a non-negative integer")


@dataclass
class GRPOConfig:
    """GRPO training of the summarizer with TRL's `GRPOTrainer` (grpo-train).

    Optimisation (paper: batch 128, 200 steps, lr 3e-7, beta 0.5):
        learning_rate, max_steps, beta (TRL's KL coefficient), loss_type (`grpo` as in the paper;
        TRL recommends `dapo` or `dr_grpo` for short completions: no per-sequence length normalisation).
        scale_rewards: TRL's advantage scaling, `group` (divide by the group's reward std, the paper's
            GRPO), `batch` or `none` (Dr. GRPO: no std division).
        mask_truncated_completions: leave completions cut by max_completion_length out of the loss
            (DAPO): a cut summary is not a summary.
        per_device_train_batch_size x gradient_accumulation_steps x world size = completions per
        optimiser step; num_generations completions per prompt (the group), so prompts per step =
        that product / num_generations. The paper's "batch 128" = 128 completions per step.
    Generation during training: max_completion_length, temperature, top_p.
    Precision: bf16 `null` = bf16 mixed precision on a GPU (when summarizer.dtype allows), fp32 on CPU;
        `true` = bf16 autocast on CPU too (worth it where the CPU has AMX or AVX512-BF16); `false` = fp32.
    Data: max_train_docs caps the GRPO prompt set (seeded sample), `None` = every training document
        with at least one positive query. judge_docs: training documents held out of GRPO for the fixed
        judge (`resume.quality.fixed_judge`; at most half of them; 0 = none).
    Launch: launcher `local` (TRL/accelerate in-process) or `ray` (Ray Train TorchTrainer);
        ray_address `None`/`local` starts Ray on this machine, or `ray://head:10001` / `auto`;
        num_workers Ray workers; use_gpu.
    """

    learning_rate: float = 3e-7
    max_steps: int = 200
    beta: float = 0.5
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 16
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    bf16: bool | None = None
    max_train_docs: int | None = None
    judge_docs: int = 64
    logging_steps: int = 1
    save_steps: int = 50
    gradient_checkpointing: bool = False
    launcher: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    seed: int = 42

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
    """Contrastive adaptation of the retriever on (query, summary of a relevant document) pairs.

    InfoNCE with in-batch negatives gathered across DDP ranks, cosine / temperature.
        learning_rate (AdamW, paper 1e-5), weight_decay, warmup_ratio, epochs or max_steps,
        batch_size (per rank), temperature (Contriever-style 0.05), hard_negatives (per query,
        mined with the current retriever; 0 = none, as in the paper).
    Distributed: nproc processes under `torchrun` (gloo on CPU, NCCL on GPU); 1 runs in-process.
    Crash safety: a checkpoint every checkpoint_steps; a rerun resumes from the last one.
    """

    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    temperature: float = 0.05
    hard_negatives: int = 0
    nproc: int = 1
    checkpoint_steps: int = 50
    seed: int = 42

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
    """Evaluation: FAISS search and trec_eval metrics (MRR@10, NDCG@10, R@100, R@1000).

    index: `auto` (default: `flat`, exact inner product, below `auto_min_docs` indexed vectors, `ivf` from
        there on), `flat`, `ivf` or `hnsw` (approximate). The defaults keep recall@100 >= 0.99 of exact
        search at 10k-1M vectors (bench/bench_scaling.py, bench/scaling.json; `resume.index.choose_kind`).
    k: depth of the run file. nlist (null = 2 * sqrt(n), clamped to n // 39) / nprobe (IVF); hnsw_m /
    ef_search / ef_construction (HNSW; a search returns at most max(ef_search, k) candidates, so ef_search
    below k is raised to k). gpu: use GPU FAISS when present (`auto`).
    What each document is indexed as (`resume.evaluate`; with no summaries, every mode but `summary` is an
    error, and `summary` indexes the full documents: the Baseline):
        mode: `summary` (the paper: one vector per document, its summary); `fused` (two views, the full
            document and its summary, searched separately at k and fused over the union of candidates);
            `long_only` (the summary only for documents longer than the retriever's window, i.e. more than
            retriever max_length minus its special tokens, counted without special tokens; else the document).
        fusion (`fused`): `score` = fusion_weight * cos(q, document) + (1 - fusion_weight) * cos(q, summary),
            both cosines exact for every candidate; `rrf` = sum over the two ranked lists of
            1 / (rrf_k + rank) (a list that misses the document adds 0).
        fusion_weight: the document view's weight in [0, 1]; `None` = chosen by the caller on the dev split
            (`resume.evaluate.choose_fusion_weight`, `resume evaluate --choose-weight-on dev`).
        rrf_k: the RRF constant (60 as in Cormack et al., 2009).
    """

    index: Literal["flat", "ivf", "hnsw", "auto"] = "auto"
    k: int = 1000
    auto_min_docs: int = 100_000
    nlist: int | None = None
    nprobe: int = 64
    hnsw_m: int = 32
    ef_search: int = 4096
    ef_construction: int = 40
    gpu: Literal["auto", True, False] = "auto"
    mode: Literal["summary", "fused", "long_only"] = "summary"
    fusion: Literal["score", "rrf"] = "score"
    fusion_weight: float | None = None
    rrf_k: int = 60

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
    """Algorithm 1 and the systems compared.

    max_iterations (paper: at most 10); stop early when the mean GRPO reward improves by less than
    eps_reward or the dev-split MRR@10 by less than eps_metric (set either to null to disable it).
    systems: any of baseline, fixed_summary, non_iterative, iterative, full_doc_control (the paper's rows
        and the control it lacks), iterative_fused (S_T and the documents as two views of one index,
        g_T, the document weight chosen on dev), lead and lead_fused (title + first sentence, no LLM,
        with g_0: alone and fused with the document the same way).
    ablations: any of no_retrieval_adaptation, no_negative_queries, continuous_reward.
    """

    max_iterations: int = 10
    eps_reward: float | None = 0.01
    eps_metric: float | None = 0.005
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))
    ablations: list[str] = field(default_factory=list)
    seed: int = 42

    def __post_init__(self):
        _check(1 <= self.max_iterations <= 100, "loop.max_iterations", self.max_iterations, "an integer in 1..100")
        for s in self.systems:
            _check(s in SYSTEMS, "loop.systems", s, f"one of {', '.join(SYSTEMS)}")
        for a in self.ablations:
            _check(a in ABLATIONS, "loop.ablations", a, f"one of {', '.join(ABLATIONS)}")


@dataclass
class TrackingConfig:
    """MLflow tracking and registry.

    tracking_uri: `None` = `$MLFLOW_TRACKING_URI`, else a sqlite file in the run directory.
    experiment: experiment name. register: register the final models at the end of `resume run`.
    summarizer_name / retriever_name: registered model names; alias: the alias put on the best.
    """

    tracking_uri: str | None = None
    experiment: str = "resume"
    register: bool = True
    summarizer_name: str = "resume-summarizer"
    retriever_name: str = "resume-retriever"
    alias: str = "champion"


@dataclass
class ResumeConfig:
    """The whole run: one section per stage."""

    name: str = "resume"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    summarizer: SummarizerConfig = field(default_factory=SummarizerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# YAML / dict loading with typed validation


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
