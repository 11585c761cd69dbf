"""Corpus summarisation with the summarizer f: prompts, separator parsing, batched cached generation.

    resume summarize --config configs/demo.yaml --out runs/demo/iter_01/summaries.jsonl

Prompt. The user message is `summarizer.prompt` filled with `{document}` (truncated to
`summarizer.max_doc_tokens` summarizer tokens), `{separator}`, `{min_tokens}` and `{max_tokens}` (from the
reward config), rendered with the model's chat template (`add_generation_prompt=True`). A thinking model
(its template prefills `<think>`, e.g. Qwen3-*-Thinking) reasons and closes the tag itself; a non-thinking
model (SmolLM2) is asked by the prompt for brief reasoning, the closing tag, then the summary, and
(`summarizer.prefill_think`, default on) its generation prompt is prefilled with `<think>` and a newline too: without
it SmolLM2-135M never wrote the separator. Either way the summary is the text after the LAST separator
(`parse_completion`). `summarizer.thinking` (`auto` renders the template) only says whether the model
is a thinking model; `is_thinking` reports it.

Fallback. A completion without the separator has no summary; the index then gets
`summarizer.fallback`: `completion` (the whole completion with `<think>`/separator tags removed) or
`document` (the truncated document text; also used when the stripped completion is empty, so the
index never gets an empty text). `has_separator` is false for those rows and their share is
reported as `missing_separator_share`.

Generation. Greedy, left padding, KV cache. `summarize_corpus` sorts the documents by prompt length and
cuts the sorted list into fixed batches, so padding is minimal and each document is always generated in
the same batch whatever was cached before (a resumed run is byte-identical to an uninterrupted one).
`generate_batch` is the pure per-batch function (model + tokenizer in, completions out); `BatchSummarizer`
wraps it for Ray Data `map_batches`. `summarizer.backend: vllm` uses vLLM when it is installed.

Cache and crash safety. Each finished document appends one JSON line `{"key","_id","completion",
"n_new_tokens"}` to `<out>.cache.jsonl` (flush + fsync after each batch). The key is a sha256 over the model
fingerprint, the rendered prompt (which contains the document) and the generation settings. A rerun skips
known keys; a partially written last line (killed mid-write) is cut off. `summaries.jsonl` is then written
atomically from the cache in corpus order: `{"_id","summary","completion","n_tokens","has_separator","truncated"}`,
`n_tokens` counted with the retriever's tokenizer (no special tokens).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resume.config import ResumeConfig
from resume.errors import ResumeError
from resume.io import write_jsonl

THINK_OPEN = "<think>"
CACHE_VERSION = 1
# One row of summaries.jsonl. `truncated`: the completion was cut by `max_new_tokens` (no stop token).
SUMMARY_FIELDS = ("_id", "summary", "completion", "n_tokens", "has_separator", "truncated")

# ------------------------------------------------------------------------------------------- prompts


def render_probe(tokenizer) -> str:
    """The template's generation prompt for a dummy user turn (used to detect thinking templates)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                         add_generation_prompt=True)


def detect_thinking(tokenizer) -> bool:
    """True when the chat template prefills `<think>` in the assistant turn (Qwen3-*-Thinking style)."""
    return render_probe(tokenizer).rstrip().endswith(THINK_OPEN)


def is_thinking(tokenizer, cfg: ResumeConfig) -> bool:
    t = cfg.summarizer.thinking
    return detect_thinking(tokenizer) if t == "auto" else bool(t)


def truncate_document(tokenizer, document: str, max_tokens: int) -> str:
    """The document cut to at most `max_tokens` tokens of the summarizer's tokenizer."""
    document = document.strip()
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return document
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).strip()


def prompt_template(cfg: ResumeConfig) -> str:
    """`summarizer.prompt`, or the default prompt of `summarizer.reasoning` when it is empty."""
    from resume.config import DEFAULT_PROMPTS

    return cfg.summarizer.prompt or DEFAULT_PROMPTS[cfg.summarizer.reasoning]


def user_message(tokenizer, document: str, cfg: ResumeConfig) -> str:
    """The prompt template with its placeholders filled (the document last, so its braces stay as they are)."""
    s, r = cfg.summarizer, cfg.reward
    fill = {"{separator}": s.separator, "{min_tokens}": str(r.min_tokens), "{max_tokens}": str(r.max_tokens),
            "{min_words}": str(round(r.min_tokens * 0.75)), "{max_words}": str(round(r.max_tokens * 0.75))}
    text = prompt_template(cfg)
    for k, v in fill.items():
        text = text.replace(k, v)
    return text.replace("{document}", truncate_document(tokenizer, document, s.max_doc_tokens))


def reasoning_prefix(cfg: ResumeConfig) -> str:
    """What the prompt prefills of the reasoning block and a parser must prepend to a completion.

    `reasoning: skip` prefills an empty, closed block: the completion is the summary alone, and the
    separator that ends the block sits in the prompt. The reward and the corpus summaries parse
    `reasoning_prefix(cfg) + completion`, so "the text after the last separator" stays the rule.
    `think` -> "" (the model writes the separator itself).
    """
    return cfg.summarizer.separator if cfg.summarizer.reasoning == "skip" else ""


def build_prompt(tokenizer, document: str, cfg: ResumeConfig) -> str:
    """The chat-formatted prompt string (generation prompt included) for one document.

    A thinking template already ends with `<think>`; for any other template `<think>` + newline is appended
    when `summarizer.prefill_think` (default), so both kinds of model only have to close the tag.
    `summarizer.reasoning: skip` closes the block at once (`<think>\n\n</think>\n\n`, the shape of
    Qwen3's non-thinking turns): every generated token is summary; with `prefill_think: false` (and a
    template that does not open `<think>` itself) the prompt ends with the separator alone.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ResumeError(f"summarizer tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                          "use an instruct/chat model or set one in its tokenizer_config.json")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user_message(tokenizer, document, cfg)}],
                                           tokenize=False, add_generation_prompt=True)
    s = cfg.summarizer
    if s.reasoning == "skip":
        if not s.prefill_think and not prompt.rstrip().endswith(THINK_OPEN):
            # a model that never saw reasoning tags (Qwen2.5 wrote "<summary></summary>" after an empty
            # <think></think> block): the separator alone, e.g. "Summary:", opens the answer
            return prompt + s.separator + "\n\n"
        prompt = prompt.rstrip() + "\n\n" if prompt.rstrip().endswith(THINK_OPEN) else prompt + THINK_OPEN + "\n\n"
        return prompt + s.separator + "\n\n"
    if s.prefill_think and not prompt.rstrip().endswith(THINK_OPEN):
        prompt += THINK_OPEN + "\n"
    return prompt


def parse_completion(text: str, separator: str = "</think>") -> str | None:
    """The summary: the text after the LAST `separator`, stripped; None when the separator is absent.

    Works for both completion shapes: a thinking template prefills `<think>` so the completion is
    `reasoning</think>summary`; a non-thinking model writes `[<think>]reasoning</think>summary` itself.
    """
    if separator not in text:
        return None
    return text.rsplit(separator, 1)[1].strip()


def strip_tags(text: str, separator: str = "</think>") -> str:
    """The completion without `<think>` / separator tags (the `completion` fallback)."""
    return " ".join(text.replace(THINK_OPEN, " ").replace(separator, " ").split())


def index_text(completion: str, document: str, tokenizer, cfg: ResumeConfig) -> tuple[str, bool]:
    """(text the index gets, has_separator) for one completion, applying `summarizer.fallback`."""
    summary = parse_completion(reasoning_prefix(cfg) + completion, cfg.summarizer.separator)
    if summary is not None:
        return summary, True
    text = strip_tags(completion, cfg.summarizer.separator) if cfg.summarizer.fallback == "completion" else ""
    if not text:  # `document` fallback, or a completion with nothing in it: never index an empty text
        text = truncate_document(tokenizer, document, cfg.summarizer.max_doc_tokens)
    return text, False


# ---------------------------------------------------------------------------------------- generation


def set_cpu_threads() -> int:
    """Use every core this process may run on (torch's default can be lower in containers)."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _decode(tokenizer, ids: list[int], separator: str) -> str:
    """Decode generated ids; keeps the separator even if the tokenizer marks it as a special token."""
    if separator in (getattr(tokenizer, "all_special_tokens", None) or []):
        special = {i for i in tokenizer.all_special_ids} - set(tokenizer.convert_tokens_to_ids([separator]))
        ids = [i for i in ids if i not in special]
        return tokenizer.decode(ids, skip_special_tokens=False)
    return tokenizer.decode(ids, skip_special_tokens=True)


def decode_generated(tokenizer, row: list[int], stops: set[int], separator: str) -> tuple[str, int, bool]:
    """One generated row: (text up to and including its first stop token, tokens kept, whether a stop token
    ended it); without a stop token the whole row (cut by max_new_tokens) is kept."""
    for j, t in enumerate(row):
        if t in stops:
            return _decode(tokenizer, row[:j + 1], separator), j + 1, True
    return _decode(tokenizer, row, separator), len(row), False


def _stop_ids(model, tokenizer) -> set[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return ids


class GeneratedNoRepeatNGram:
    """A `LogitsProcessor` that bans any n-gram the completion has already generated, looking at the
    GENERATED tokens only. transformers' `no_repeat_ngram_size` also counts the prompt, so it would forbid
    copying any n-gram of the document (its key terms) into the summary; no library option restricts it to
    the completion, hence these few lines. Greedy decoding of a small model otherwise falls into loops
    ("it is an improvement on the previous one, and it is an improvement on the previous one ...")."""

    def __init__(self, n: int, prompt_len: int):
        self.n, self.prompt_len = n, prompt_len

    def __call__(self, input_ids, scores):
        n = self.n
        gen = input_ids[:, self.prompt_len:].tolist()
        for row, toks in enumerate(gen):
            if len(toks) < n:
                continue
            tail = toks[len(toks) - n + 1:]
            banned = {toks[i + n - 1] for i in range(len(toks) - n + 1) if toks[i:i + n - 1] == tail}
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def generate_prompts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                     separator: str = "</think>", *, return_finished: bool = False, no_repeat_ngram_size: int = 0):
    """Greedy generation for already rendered prompts: (completions, generated token counts), plus
    `finished` flags (a stop token was generated: not cut by `max_new_tokens`) with `return_finished`.

    Left padding, KV cache; prompts are tokenized without adding special tokens (the chat template has
    them). `no_repeat_ngram_size` > 0 bans repeating an n-gram of the completion (`GeneratedNoRepeatNGram`).
    Pure: no state beyond the arguments.
    """
    import torch

    if not prompts:
        return ([], [], []) if return_finished else ([], [])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    extra = {}
    if no_repeat_ngram_size > 0:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList(
            [GeneratedNoRepeatNGram(no_repeat_ngram_size, enc["input_ids"].shape[1])])
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None, **extra)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    stops = _stop_ids(model, tokenizer)
    decoded = [decode_generated(tokenizer, row, stops, separator) for row in new]
    texts, counts, finished = [d[0] for d in decoded], [d[1] for d in decoded], [d[2] for d in decoded]
    return (texts, counts, finished) if return_finished else (texts, counts)


def generate_batch(model, tokenizer, docs: list[str], cfg: ResumeConfig, max_new_tokens: int | None = None) -> list[str]:
    """Completions for a batch of documents (greedy). The per-batch function reused by Ray Data."""
    prompts = [build_prompt(tokenizer, d, cfg) for d in docs]
    texts, _ = generate_prompts(model, tokenizer, prompts, max_new_tokens or cfg.summarizer.max_new_tokens,
                                cfg.summarizer.separator, no_repeat_ngram_size=cfg.summarizer.no_repeat_ngram_size)
    return texts


class BatchSummarizer:
    """A callable class for Ray Data: `ds.map_batches(BatchSummarizer, fn_constructor_args=(name, cfg),
    batch_size=cfg.summarizer.batch_size, concurrency=n)`; input column `text`, adds `completion`."""

    def __init__(self, model: str, cfg: ResumeConfig, device: str | None = None):
        from resume.models import load_causal_lm, pick_device

        self.cfg = cfg
        self.model, self.tokenizer = load_causal_lm(model, dtype=cfg.summarizer.dtype,
                                                    device=device or pick_device(cfg.device))
        self.model.eval()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        docs = [str(t) for t in batch["text"]]
        out = dict(batch)
        out["completion"] = generate_batch(self.model, self.tokenizer, docs, self.cfg)
        return out


def vllm_dtype(dtype: str) -> str:
    """summarizer.dtype as vLLM names it: vLLM runs on GPUs, where `native` is bf16 (`auto` is vLLM's own:
    the checkpoint's dtype)."""
    return "bfloat16" if dtype == "native" else dtype


def _generate_vllm(model_dir: str, prompts: list[str], cfg: ResumeConfig) -> tuple[list[str], list[int], list[bool]]:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ResumeError("summarizer.backend is 'vllm' but vllm is not installed; `pip install vllm` on a GPU "
                          "machine or set summarizer.backend=hf") from None
    llm = LLM(model=model_dir, dtype=vllm_dtype(cfg.summarizer.dtype), seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=cfg.summarizer.max_new_tokens,
                            skip_special_tokens=cfg.summarizer.separator not in llm.get_tokenizer().all_special_tokens)
    outs = llm.generate(prompts, params)
    return ([o.outputs[0].text for o in outs], [len(o.outputs[0].token_ids) for o in outs],
            [o.outputs[0].finish_reason == "stop" for o in outs])


# ------------------------------------------------------------------------------------- cache (JSONL)


def generation_settings(cfg: ResumeConfig, dtype: Any) -> dict[str, Any]:
    """The generation settings that enter the cache key (`dtype`: the loaded model's torch dtype)."""
    s = cfg.summarizer
    out = {"backend": s.backend, "decoding": "greedy", "max_new_tokens": s.max_new_tokens,
           "dtype": vllm_dtype(s.dtype) if s.backend == "vllm" else str(dtype), "separator": s.separator}
    if s.no_repeat_ngram_size:  # only when set, so caches written before the option keep their keys
        out["no_repeat_ngram_size"] = s.no_repeat_ngram_size
    return out


def content_key(fingerprint: str, prompt: str, settings: dict[str, Any]) -> str:
    """sha256 over the model fingerprint, the rendered prompt and the generation settings."""
    blob = json.dumps({"v": CACHE_VERSION, "model": fingerprint, "prompt": prompt, "gen": settings},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path_for(out_path: str | Path) -> Path:
    return Path(str(out_path) + ".cache.jsonl")


def read_cache(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Load the cache (key -> entry) and cut off a partially written last line.

    Returns (entries, number of bad lines ignored). A last line without its newline is a write that was
    killed midway: it is truncated away so that the next append starts on a clean line.
    """
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries, 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    bad = 0
    if end < len(data):  # torn last line
        bad += 1
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            entries[e["key"]] = e
        except (ValueError, KeyError, TypeError):
            bad += 1
    return entries, bad


def append_cache(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows, one JSON line each, in one write; flush + fsync before returning."""
    if not rows:
        return
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "ab") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------ corpus summary


def corpus_docs(cfg: ResumeConfig, data_dir: str | Path, doc_ids: Sequence[str] | None) -> list[tuple[str, str]]:
    """[(doc_id, doc text)] in corpus order: `doc_ids` if given, else the config's working set."""
    from resume.data import doc_text, load_beir, select_working_set

    ds = load_beir(data_dir)
    if doc_ids is None:
        ds = select_working_set(ds, cfg.data)
        ids = list(ds.corpus)
    else:
        wanted = set(doc_ids)
        missing = sorted(wanted - set(ds.corpus))
        if missing:
            raise ResumeError(f"{data_dir}: {len(missing)} requested document id(s) not in the corpus, "
                              f"e.g. {missing[:3]}")
        ids = [d for d in ds.corpus if d in wanted]
    return [(d, doc_text(ds.corpus[d])) for d in ids]


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by decreasing length (stable), cut into batches of `batch_size`.

    Longest first: the slowest batch runs while the progress estimate is still young, and a memory
    problem shows up at once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def summarize_corpus(cfg: ResumeConfig, *, data_dir: str | Path, model: str, retriever: str,
                     out_path: str | Path, doc_ids: Sequence[str] | None = None,
                     loaded: tuple[Any, Any] | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Summarise the corpus (greedy, batched, cached, resumable) and write `out_path` (summaries.jsonl).

    model: summarizer name or dir (its fingerprint keys the cache); `loaded` = an already loaded
    (model, tokenizer) for that name. retriever: the model whose tokenizer counts `n_tokens`.
    doc_ids: restrict to these ids (kept in corpus order); None = the config's working set.
    Returns stats: n_docs, n_generated, n_cached, missing_separator_share, docs_per_s, tokens_per_s,
    time_s, mean_n_tokens, out_path.
    """
    from tqdm.auto import tqdm

    from resume.models import load_causal_lm, load_tokenizer, model_fingerprint, pick_device, resolve_model

    t0 = time.perf_counter()
    s = cfg.summarizer
    out_path = Path(out_path)
    docs = corpus_docs(cfg, data_dir, doc_ids)
    device = pick_device(cfg.device)
    if loaded is None:
        if s.backend == "hf":
            set_cpu_threads() if device == "cpu" else None
            mdl, tok = load_causal_lm(model, dtype=s.dtype, device=device)
            mdl.eval()
        else:
            mdl, tok = None, load_tokenizer(model)
    else:
        mdl, tok = loaded
    fingerprint = model_fingerprint(model)
    settings = generation_settings(cfg, None if s.backend == "vllm" else next(mdl.parameters()).dtype)
    prompts = [build_prompt(tok, text, cfg) for _, text in docs]
    keys = [content_key(fingerprint, p, settings) for p in prompts]

    cache_file = cache_path_for(out_path)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache, bad = read_cache(cache_file)
    # Batches are planned over the prompts still to generate (one per distinct key), so a cache filled by
    # another working set or config (the documents shared with an earlier run) saves its documents' work
    # instead of leaving them as passengers of partly cached batches. After a crash the cached documents are
    # the first whole batches of the same length order, so the rest are planned exactly as before.
    first_of_key: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache:
            first_of_key.setdefault(k, i)
    pending = list(first_of_key.values())
    lengths = [len(x) for x in tok([prompts[i] for i in pending], add_special_tokens=False)["input_ids"]] \
        if pending else []
    todo = [[pending[j] for j in b] for b in plan_batches(lengths, s.batch_size)]
    n_todo = len(pending)
    n_cached = len({k for k in keys if k in cache})

    gen_tokens, gen_docs, t_gen = 0, 0, time.perf_counter()
    if todo and s.backend == "vllm":
        model_dir = resolve_model(model)
        texts, counts, fins = _generate_vllm(model_dir, [prompts[i] for i in pending], cfg)
        rows = [{"key": keys[i], "_id": docs[i][0], "completion": t, "n_new_tokens": c, "finished": f}
                for i, t, c, f in zip(pending, texts, counts, fins)]
        append_cache(cache_file, rows)
        cache.update({r["key"]: r for r in rows})
        gen_tokens, gen_docs = sum(counts), len(rows)
    elif todo:
        bar = tqdm(total=n_todo, unit="doc", desc="summarize", disable=None if progress is None else not progress)
        for b in todo:
            texts, counts, fins = generate_prompts(mdl, tok, [prompts[i] for i in b], s.max_new_tokens, s.separator,
                                                   return_finished=True, no_repeat_ngram_size=s.no_repeat_ngram_size)
            rows = []
            for i, t, c, f in zip(b, texts, counts, fins):  # `pending`: one uncached row per key
                row = {"key": keys[i], "_id": docs[i][0], "completion": t, "n_new_tokens": c, "finished": f}
                cache[keys[i]] = row
                rows.append(row)
                gen_tokens += c
            append_cache(cache_file, rows)
            gen_docs += len(rows)
            bar.update(len(rows))
            dt = max(time.perf_counter() - t_gen, 1e-9)
            bar.set_postfix(tok_s=f"{gen_tokens / dt:.1f}", refresh=False)
        bar.close()
    t_gen = time.perf_counter() - t_gen

    # Final file: corpus order, from the cache.
    rtok = load_tokenizer(retriever)
    out_rows, missing = [], 0
    for (doc_id, text), key in zip(docs, keys):
        entry = cache[key]
        completion = entry["completion"]
        summary, has_sep = index_text(completion, text, tok, cfg)
        missing += not has_sep
        # `finished` is absent from caches written before it existed: cut iff it used the whole budget
        truncated = not entry.get("finished", int(entry.get("n_new_tokens", 0)) < s.max_new_tokens)
        out_rows.append({"_id": doc_id, "summary": summary, "completion": completion, "has_separator": has_sep,
                         "truncated": truncated})
    counts = [len(x) for x in rtok([r["summary"] for r in out_rows], add_special_tokens=False)["input_ids"]] \
        if out_rows else []
    for r, n in zip(out_rows, counts):
        r["n_tokens"] = n
    out_rows = [{k: r[k] for k in SUMMARY_FIELDS} for r in out_rows]
    write_jsonl(out_path, out_rows)
    total = time.perf_counter() - t0
    return {
        "out_path": str(out_path),
        "cache_path": str(cache_file),
        "n_docs": len(docs),
        "n_generated": gen_docs,
        "n_cached": n_cached,
        "bad_cache_lines": bad,
        "missing_separator": missing,
        "missing_separator_share": missing / len(docs) if docs else 0.0,
        "truncated_share": sum(r["truncated"] for r in out_rows) / len(out_rows) if out_rows else 0.0,
        "fallback": s.fallback,
        "mean_n_tokens": sum(counts) / len(counts) if counts else 0.0,
        "generated_tokens": gen_tokens,
        "generation_time_s": round(t_gen, 3),
        "docs_per_s": gen_docs / t_gen if gen_docs and t_gen > 0 else 0.0,
        "tokens_per_s": gen_tokens / t_gen if gen_tokens and t_gen > 0 else 0.0,
        "time_s": round(total, 3),
        "batch_size": s.batch_size,
        "backend": s.backend,
        "dtype": settings["dtype"],
    }
