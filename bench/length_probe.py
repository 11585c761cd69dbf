"""Probe (issue #11): how long can an EXTRACTIVE summary be before it stops beating the document?

    .venv/bin/python bench/length_probe.py        # -> bench/length_probe.json (about 4 minutes, no LLM)

The paper's StructureReward pays 1.0 only for 64-128 retriever tokens; the lead control (title + first
sentence, ~50 tokens) earns 0.3 for length there but is the best summary measured under the fixed judge g_0
(docs/LEVERS.md rows 9, 17). This probe asks whether the rewarded length itself is a ceiling: it scores, on
the same 64 held-out training documents and with the same judge as bench/grpo_probe.py
(`resume.quality.fixed_judge`, per-document Delta), texts cut from the document with no model at all:

- `title`, `lead` (title + first sentence), `lead+k` (title + first k+1 sentences of the body);
- `head-N`: the title and the body's first words, up to N retriever tokens (N = 48, below the rewarded range, and 64, 96, 128 in it);
- with f_0's cached greedy summaries from bench/grpo_probe.py (same machine): `f0` itself, and the free
  index-time variants `title+f0` and `lead+f0` (the title / lead prepended to f_0's summary).

Each row: mean tokens, share in the rewarded 64-128 range, mean Delta, mean paper reward (structure + r_phi),
and paired tests (`grpo_probe.paired`) against the lead and against f_0.

`--retrieval SPLIT` (dev; never test for choosing) also writes the no-model variants for the whole corpus
(bench/out/length_probe/<name>/summaries.jsonl) and evaluates each as the only index under g_0
(`resume.evaluate.evaluate_retrieval`, summary mode) beside the document index (the Baseline), with paired
tests on MRR@10 and NDCG@10 against the document and against the lead.

`--corpus-f0 PATH` (with `--retrieval`): f_0's summaries of the whole corpus, written by the product's own
stage (`resume summarize --config configs/cranfield.yaml --set summarizer.dtype=float32 --out PATH`; ~85 min
on 2 cores): `f0` and `title+f0` become whole-corpus indexes too, and the lead, `f0` and `title+f0` are each
also fused with the document (score fusion, `resume.evaluate.choose_fusion_weight`: the document's weight that maximises
MRR@10 on SPLIT, rows `document+<view>`, with its curve). The weight is chosen and reported on the same
split, so each fused row is that view's best case on dev, the same for every view: compare them with each
other, not with a test-split figure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(ROOT / "bench"))


def titled(title: str, text: str) -> str:
    """`title. text`, leaving out whichever is empty. The product's join (`resume.lead.join_title`, used by
    `evaluate.summary_title`) writes no second period after a title that ends with one; this one is kept so
    that the committed length_probe JSONs reproduce (docs/LEVERS.md rows 32-33 compare the two on dev)."""
    return ". ".join(p for p in (title, text) if p)


def head(title: str, body: str, n_tokens: int, count) -> str:
    """The title and as many leading words of the body as keep the text within n_tokens (whole words)."""
    words = body.split()

    def text(n: int) -> str:
        return titled(title, " ".join(words[:n]))

    lo, hi = 0, len(words)  # the largest prefix that fits, by bisection on the token count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text(mid)) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text(lo)


def whole_corpus(cfg, data: str, split: str, ds, encoder, makers: dict, fused: tuple[str, ...] = (),
                 out: Path = ROOT / "bench" / "out" / "length_probe") -> dict:
    """Each maker's text for every corpus document as the only index, `split`'s queries, g_0; the document
    index first. Returns {"split", "systems": {name: {"metrics", "vs_document": {metric: paired}, "vs_lead": ...}}};
    each name in `fused` also gets a row `document+<name>`: the document and that view fused by score at the
    weight that maximises MRR@10 on `split` (`resume.evaluate.choose_fusion_weight`), with "fusion_weight" and
    "curve". With a `document+lead` row, every other row is also compared with it."""
    import json

    from resume.evaluate import CachingEncoder, choose_fusion_weight, evaluate_retrieval, paired_test
    from resume.io import write_jsonl

    encoder = CachingEncoder(encoder)  # each view (the document's too) encoded once, however often it is indexed
    res, per_query = {}, {}

    def evaluate(row: str, texts: Path | None, out_dir: Path, **kw) -> dict:
        m = evaluate_retrieval(cfg, data_dir=data, split=split, retriever=cfg.retriever.model, texts=texts,
                               out_dir=out_dir, encoder=encoder, summary_title=False, **kw)  # rows carry their own
        per_query[row] = json.loads((out_dir / "per_query.json").read_text())
        res[row] = {"metrics": m}
        return res[row]

    for name, make in {"document": None, **makers}.items():
        texts = None
        if make is not None:
            texts = out / name / "summaries.jsonl"
            write_jsonl(texts, ({"_id": d, "summary": make(d)} for d in ds.corpus))
        evaluate(name, texts, out / name / f"eval-{split}", mode="summary")
        if name in fused:
            w = choose_fusion_weight(cfg, data_dir=data, split=split, retriever=cfg.retriever.model, texts=texts,
                                     encoder=encoder, summary_title=False)
            evaluate(f"document+{name}", texts, out / name / f"eval-{split}-fused", mode="fused",
                     fusion_weight=w["weight"]).update(
                fusion_weight=w["weight"], curve={str(k): v for k, v in w["curve"].items()})
    refs = [r for r in ("document", "lead", "document+lead") if r in res]
    for name, row in res.items():
        for ref in refs:
            if name != ref:
                row[f"vs_{ref}"] = {k: paired_test(per_query[ref], per_query[name], metric=k)
                                    for k in ("mrr@10", "ndcg@10")}
        print(f"{split} {name:9s} MRR@10 {row['metrics']['mrr@10']:.3f} NDCG@10 {row['metrics']['ndcg@10']:.3f}"
              + "".join(f" | vs {ref} {row[f'vs_{ref}']['ndcg@10']['mean_diff']:+.3f} p={row[f'vs_{ref}']['ndcg@10']['p_value']:.3f}"
                        for ref in refs if f"vs_{ref}" in row), flush=True)
    return {"split": split, "systems": res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cranfield.yaml"))
    ap.add_argument("--data", default=str(ROOT / "data" / "cranfield"))
    ap.add_argument("--f0", default=str(ROOT / "bench" / "out" / "grpo_probe" / "f0-smollm2-135m-instruct"
                                        / "summaries.jsonl"), help="f_0's summaries (bench/grpo_probe.py's cache)")
    ap.add_argument("--corpus-f0", default=None, metavar="PATH",
                    help="f_0's summaries of the whole corpus (`resume summarize`): with --retrieval, `f0` and "
                         "`title+f0` become whole-corpus indexes too, each also fused with the document")
    ap.add_argument("--retrieval", default=None, metavar="SPLIT",
                    help="also evaluate the no-model variants as whole-corpus indexes on SPLIT (dev)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "length_probe.json"))
    args = ap.parse_args(argv)

    from _common import rel, write_result
    from grpo_probe import paired

    from resume.config import load_config
    from resume.data import load_beir
    from resume.grpo import judge_doc_ids
    from resume.lead import lead_text, split_sentences, strip_title
    from resume.loop import run_env
    from resume.models import load_tokenizer
    from resume.quality import fixed_judge
    from resume.retriever import Encoder
    from resume.run_dir import read_summaries

    cfg = load_config(args.config)
    ds = load_beir(args.data)
    corpus_f0 = None
    if args.corpus_f0:  # checked before any work: every corpus document needs its summary
        if not args.retrieval:
            raise SystemExit("--corpus-f0 needs --retrieval SPLIT (the summaries are indexed on that split)")
        corpus_f0 = read_summaries(args.corpus_f0)
        missing = sorted(set(ds.corpus) - set(corpus_f0))
        if missing:
            raise SystemExit(f"{args.corpus_f0}: no summary for {len(missing)} of {len(ds.corpus)} corpus "
                             f"documents (first: {missing[0]}); finish `resume summarize` first")
    ids = judge_doc_ids(cfg, ds)
    tok = load_tokenizer(cfg.retriever.model)

    def count(s: str) -> int:
        return len(tok(s, add_special_tokens=False)["input_ids"])

    parts = {}
    for d in (ds.corpus if args.retrieval else ids):
        title = " ".join(str(ds.corpus[d].get("title") or "").split())
        parts[d] = (title, split_sentences(strip_title(str(ds.corpus[d].get("text") or ""), title)))

    def lead_k(d: str, k: int) -> str:
        title, sents = parts[d]
        return " ".join([f"{title}." if title else "", *sents[:k]]).strip()

    # one maker (doc id -> text) per no-model variant, for the judge's documents and, with --retrieval, the corpus
    makers = {"title": lambda d: parts[d][0], "lead": lambda d: lead_text(ds.corpus[d]),
              **{f"lead+{k - 1}": (lambda d, k=k: lead_k(d, k)) for k in (2, 3, 4)},
              **{f"head-{n}": (lambda d, n=n: head(parts[d][0], " ".join(parts[d][1]), n, count))
                 for n in (48, 64, 96, 128)}}
    variants = {name: {d: make(d) for d in ids} for name, make in makers.items()}

    def with_f0(f0: dict[str, str]) -> dict:  # the makers of the f_0-based variants, over one set of summaries
        return {"f0": lambda d: f0[d], "title+f0": lambda d: titled(parts[d][0], f0[d]),
                "lead+f0": lambda d: f"{makers['lead'](d)} {f0[d]}"}

    f0_path = Path(args.f0)
    if f0_path.exists():
        f0 = read_summaries(f0_path)
        variants.update({name: {d: make(d) for d in ids if d in f0} for name, make in with_f0(f0).items()})

    encoder = Encoder(cfg.retriever.model, cfg.retriever, device=None if cfg.device == "auto" else cfg.device)
    scored = {}
    for name, texts in variants.items():
        fj = fixed_judge(cfg, data_dir=args.data, summaries=texts, judge=cfg.retriever.model, doc_ids=ids,
                         encoder=encoder, per_doc=True)
        lengths = [count(t) for t in texts.values()]
        scored[name] = {"fixed_judge": fj, "mean_tokens": sum(lengths) / len(lengths),
                        "in_range_share": sum(cfg.reward.min_tokens <= n <= cfg.reward.max_tokens for n in lengths)
                        / len(lengths)}
    for name, row in scored.items():
        row["vs_lead"] = paired(scored["lead"], row) if name != "lead" else None
        row["vs_f0"] = paired(scored["f0"], row) if "f0" in scored and name != "f0" else None
        fj = row["fixed_judge"]
        print(f"{name:10s} tokens {row['mean_tokens']:6.1f} in-range {row['in_range_share']:.2f} "
              f"delta {fj['delta_mean']:+.4f} reward {fj['reward_mean']:+.3f}"
              + (f" | vs lead {row['vs_lead']['gain']:+.4f} p={row['vs_lead']['t_p']:.3f}" if row["vs_lead"] else "")
              + (f" | vs f0 {row['vs_f0']['gain']:+.4f} p={row['vs_f0']['t_p']:.3f}" if row["vs_f0"] else ""),
              flush=True)
    retrieval = None
    if args.retrieval:
        corpus_makers = {n: makers[n] for n in ("title", "lead", "lead+1", "lead+2", "head-64", "head-96",
                                                "head-128")}
        fused: tuple[str, ...] = ()
        if corpus_f0 is not None:
            corpus_makers.update({n: m for n, m in with_f0(corpus_f0).items() if n != "lead+f0"})
            fused = ("lead", "f0", "title+f0")
        retrieval = whole_corpus(cfg, args.data, args.retrieval, ds, encoder, corpus_makers, fused)
    write_result(args.out, {"config": args.config, "n_judge_docs": len(ids), "env": run_env(cfg),
                            "f0_summaries": rel(f0_path) if f0_path.exists() else None,
                            "corpus_f0_summaries": rel(args.corpus_f0) if args.corpus_f0 else None,
                            "variants": scored, "retrieval": retrieval})
    return 0


if __name__ == "__main__":
    sys.exit(main())
