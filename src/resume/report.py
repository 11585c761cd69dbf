"""report.md and plots/*.png of a run directory written by `resume.loop` (reads results.json only, through
`resume.run_dir.read_results`: its paths resolved against the run directory).

    python -m resume.report runs/tiny        # (re)write runs/tiny/report.md and runs/tiny/plots/

Sections: what it ran on (dataset, working-set sizes, models, device, date, times); the paper-style table
of our systems next to the paper's published numbers (DESIGN §1) with the change in MRR@10 relative to each
table's Baseline; the iterations (reward, dev/test metrics, summary length, separator rate, early stopping);
the ablations (NDCG@10 next to the paper's); an out-of-distribution table when results.json carries one;
plots (metrics across iterations; reward and its parts per GRPO step); the summaries of three documents
across iterations (S_0, S_1, ...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from resume.io import atomic_write_text
from resume.run_dir import METRICS, iter_summary_rows, read_results, read_reward_log

HEADERS = ("MRR@10", "NDCG@10", "R@100", "R@1000")

# DESIGN §1: MS MARCO dev, Contriever, Qwen3-4B-Thinking-2507.
PAPER = {
    "baseline": (0.266, 0.324, 0.819, 0.954),
    "fixed_summary": (0.234, 0.290, 0.789, 0.943),
    "non_iterative": (0.235, 0.291, 0.792, 0.942),
    "iterative": (0.301, 0.368, 0.874, 0.976),
}
PAPER_ABLATION_NDCG = {"full": 0.368, "no_retrieval_adaptation": 0.291, "no_negative_queries": 0.362,
                       "continuous_reward": 0.340}
PAPER_OOD = {"dataset": "NFCorpus", "baseline": (0.501, 0.305, 0.290), "iterative": (0.535, 0.329, 0.303)}
LABELS = {
    "baseline": "Baseline (full documents, g_0)",
    "fixed_summary": "Fixed Summary (S_0 from f_0, g_0)",
    "non_iterative": "Non-iterative (S_1 from f_1, g_0)",
    "iterative": "Iterative (S_T from f_T, g_T)",
    "full_doc_control": "Full-doc control (g_0 fine-tuned on full documents, same budget)",
    "iterative_fused": "Iterative + fused (documents and S_T as two views, g_T)",
    "lead": "Lead control (title + first sentence, no LLM, g_0)",
    "lead_fused": "Lead control + fused (documents and leads as two views, g_0)",
    "fixed_summary_titled": "Fixed Summary + title (each S_0 after its document's title, g_0)",
    "iterative_titled": "Iterative + title (each S_T after its document's title, g_T)",
    "iterative_titled_fused": "Iterative + title + fused (documents and title + S_T as two views, g_T)",
    "no_retrieval_adaptation": "w/o retrieval adaptation",
    "no_negative_queries": "w/o negative queries",
    "continuous_reward": "w/o discrete reward (continuous Δ)",
}


TITLED = ("fixed_summary_titled", "iterative_titled", "iterative_titled_fused")
# the systems the report tests every other one against (paired, per query), where the run has them
PAIRED_REFS = ("iterative", "iterative_fused", "iterative_titled", "iterative_titled_fused")


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{float(x):.{nd}f}"


def _rel(x: float | None, base: float | None) -> str:
    if x is None or base is None or base == 0:
        return "–"
    return f"{100.0 * (x - base) / base:+.1f}%"


# -------------------------------------------------------------------------------------------- plots


def make_plots(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    """plots/metrics.png (dev/test MRR@10 and NDCG@10 across iterations, iteration 0 = S_0 with g_0) and
    plots/reward.png (reward and its parts per GRPO step, global step across iterations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    its = results.get("iterations") or []

    # metrics across iterations
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, m, title in ((axes[0], "mrr@10", "MRR@10"), (axes[1], "ndcg@10", "NDCG@10")):
        for split, style in (("test", "o-"), ("dev", "s--")):
            xs = [it["iteration"] for it in its if it.get(split)]
            ys = [it[split][m] for it in its if it.get(split)]
            if split == "test" and "fixed_summary" in results.get("systems", {}):
                xs, ys = [0] + xs, [results["systems"]["fixed_summary"]["test"][m]] + ys
            if split == "dev" and results.get("s0_dev"):
                xs, ys = [0] + xs, [results["s0_dev"][m]] + ys
            if xs:
                ax.plot(xs, ys, style, label=f"iterative ({split})")
        for name, ab in (results.get("ablations") or {}).items():
            xs = [it["iteration"] for it in ab.get("iterations", [])]
            ys = [it["test"][m] for it in ab.get("iterations", [])]
            if xs:
                ax.plot(xs, ys, ".:", label=f"{name} (test)")
        base = (results.get("systems", {}).get("baseline") or {}).get("test")
        if base:
            ax.axhline(base[m], color="gray", lw=1, ls="-.", label="baseline (test)")
        ax.set_xlabel("iteration (0 = f_0, g_0)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    p = out_dir / "metrics.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    # reward per GRPO step
    series: dict[str, list[tuple[int, float]]] = {}
    bounds, offset = [], 0
    for it in its:
        rows = read_reward_log(it["summarizer"])
        last = 0
        for i, row in enumerate(rows):
            step = int(row.get("step", i + 1))
            last = max(last, step)
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    series.setdefault(k, []).append((offset + step, float(v)))
        offset += last
        bounds.append(offset)
    if series:
        parts = ("reward", "reward_mean", "structure_mean", "retrieval_mean", "delta_mean")
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for k in parts:
            if k in series:
                axes[0].plot(*zip(*series[k]), ".-", label=k)
        for k in ("length_mean", "completion_length_mean"):
            if k in series:
                axes[1].plot(*zip(*series[k]), ".-", label=k)
        if "separator_rate" in series:  # a rate in [0, 1]: its own axis
            ax2 = axes[1].twinx()
            ax2.plot(*zip(*series["separator_rate"]), "x--", color="tab:red", label="separator_rate")
            ax2.set_ylim(-0.05, 1.05)
            ax2.legend(fontsize=7, loc="lower right")
        for ax in axes:
            for b in bounds[:-1]:
                ax.axvline(b + 0.5, color="gray", lw=0.8, ls=":")
            ax.set_xlabel("GRPO step (global, across iterations)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7, loc="upper left")
        axes[0].set_title("reward and its parts (means per step)")
        axes[1].set_title("summary length (tokens) / separator rate")
        fig.tight_layout()
        p = out_dir / "reward.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------- markdown


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _summaries_of_three(results: dict[str, Any], n_docs: int = 3, max_chars: int = 600) -> list[str]:
    sets = ([("S_0", results["s0"])] if results.get("s0") else []) + \
        [(f"S_{it['iteration']}", it["summaries"]) for it in results.get("iterations") or []]
    sets = [(n, p) for n, p in sets if p and Path(p).exists()]
    if not sets:
        return ["(no summaries in this run)"]
    data = {n: {r["_id"]: r for r in iter_summary_rows(p)} for n, p in sets}  # the one reader
    # three documents judged for test queries when possible, else the first three, in a stable order
    common = [d for d in data[sets[0][0]] if all(d in data[n] for n, _ in sets)]
    test_docs: set[str] = set()
    qrels = Path(results["run_dir"]) / "data" / "qrels" / f"{results['splits']['test']}.tsv"
    if qrels.exists():
        for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2:
                test_docs.add(parts[1])
    chosen = ([d for d in common if d in test_docs] + [d for d in common if d not in test_docs])[:n_docs]
    lines: list[str] = []
    for d in chosen:
        lines.append(f"**Document `{d}`**")
        lines.append("")
        for n, _ in sets:
            r = data[n][d]
            text = (r.get("summary") or "").replace("\n", " ").strip()
            text = text if len(text) <= max_chars else text[:max_chars] + " …"
            sep = "" if r.get("has_separator", True) else ", no separator (fallback text)"
            lines.append(f"- {n} ({r.get('n_tokens', '?')} tokens{sep}): {text or '(empty)'}")
        lines.append("")
    return lines


def _significance(systems: dict[str, Any], ref: str = "iterative",
                  metrics: tuple[str, ...] = ("mrr@10", "ndcg@10")) -> list[list[str]]:
    """`ref` vs every other system, from the eval dirs' per_query.json (empty when unavailable)."""
    it = systems.get(ref) or {}
    a_path = Path(it.get("dir", "")) / "per_query.json"
    if not it.get("dir") or not a_path.exists():
        return []
    from resume.evaluate import paired_test

    mine = json.loads(a_path.read_text(encoding="utf-8"))
    rows = []
    for name, sysm in systems.items():
        p = Path(sysm.get("dir", "")) / "per_query.json"
        if name == ref or not sysm.get("dir") or not p.exists():
            continue
        other = json.loads(p.read_text(encoding="utf-8"))
        cells = []
        for m in metrics:
            r = paired_test(other, mine, m)
            cells += [_f(r["mean_diff"]), _f(r["p_value"]), _f(r["p_permutation"])]
        rows.append([LABELS.get(name, name).split(" (")[0], str(r["n"]), *cells])
    return rows


def _quality_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per summary set: S_0, each iteration's S_t, the lead control (results.json `quality`)."""
    sets = [("0 (S_0, f_0)", results.get("s0_quality"))]
    sets += [(str(it["iteration"]), it.get("quality")) for it in results.get("iterations") or []]
    sets += [("lead (no LLM)", results.get("lead_quality"))]
    rows = []
    for name, q in sets:
        if not q:
            continue
        t, j = q.get("text") or {}, q.get("fixed_judge") or {}
        rows.append([name, _f(t.get("placeholder_rate"), 2), _f(t.get("boilerplate_rate"), 2),
                     _f(t.get("copy_rate"), 2), _f(t.get("distinct_2"), 2), _f(t.get("mean_tokens"), 1),
                     _f(t.get("truncation_rate"), 2), _f(t.get("separator_rate"), 2),
                     _f(j.get("delta_mean"), 4), _f(j.get("reward_mean"), 3), str(j.get("n", "–"))])
    return rows


def _stage_totals(times: dict[str, float], cpu: dict[str, float]) -> list[list[str]]:
    tot: dict[str, list[float]] = {}
    tcpu: dict[str, float] = {}
    for k, v in times.items():
        kind = k.rsplit("/", 1)[-1]
        tot.setdefault(kind, []).append(float(v))
        tcpu[kind] = tcpu.get(kind, 0.0) + float(cpu.get(k, 0.0))
    return [[k, str(len(v)), f"{sum(v):.1f}", f"{tcpu[k]:.1f}"]
            for k, v in sorted(tot.items(), key=lambda kv: -sum(kv[1]))]


def _env_line(env: dict[str, Any]) -> str:
    if not env:
        return "- Machine: not recorded."
    bf16 = "AMX" if env.get("amx_bf16") else ("AVX512-BF16, no AMX" if env.get("avx512_bf16") else "no native bf16")
    return (f"- Machine: {env.get('cpu')} ({bf16}), {env.get('cpus')} CPUs, {env.get('torch_threads')} torch "
            f"threads; summarizer dtype `{env.get('summarizer_dtype')}`, retriever dtype "
            f"`{env.get('retriever_dtype')}`. Greedy summaries depend on the CPU's kernels (bf16 ones most): another CPU "
            f"gives other S_t and so other numbers (README, \"Results on another CPU\").")


def render(results: dict[str, Any], plots: list[Path]) -> str:
    systems = results.get("systems") or {}
    data = results.get("data") or {}
    L: list[str] = [f"# ReSuMe run report: {results.get('name', '')}", ""]
    L += ["## What it ran on", ""]
    q = ", ".join(f"{s}: {n}" for s, n in (data.get("queries") or {}).items())
    L += [f"- Dataset: `{data.get('source')}`; working set {data.get('n_docs')} documents "
          f"(of {data.get('n_docs_source')}), queries per split {q} "
          f"(train `{results['splits']['train']}`, dev `{results['splits']['dev']}`, test `{results['splits']['test']}`).",
          f"- Models: summarizer f_0 `{results['models']['summarizer']}`, retriever g_0 `{results['models']['retriever']}`.",
          f"- Device: {results.get('device')}. Started {results.get('started')}, finished {results.get('finished')} (UTC).",
          _env_line(results.get("env") or {}),
          f"- Time: {results.get('seconds_stages', 0):.0f} s in stages (sum over all stages, including ones done "
          f"by an earlier, interrupted invocation); this invocation {results.get('seconds_this_invocation', 0):.0f} s.",
          f"- Run directory: `{results.get('run_dir')}`.", ""]
    if (data.get("n_docs") or 0) < 1000:
        L += ["> Small working set: differences between systems here are within noise unless the paired test "
              "says otherwise; the paper's numbers are on MS MARCO with a 4B summarizer.", ""]

    # main table
    L += ["## Systems (test split) next to the paper", ""]
    base = (systems.get("baseline") or {}).get("test", {}).get("mrr@10")
    rows = []
    order = ["baseline", "fixed_summary", "non_iterative", "iterative", "full_doc_control", "iterative_fused",
             "lead", "lead_fused", "fixed_summary_titled", "iterative_titled", "iterative_titled_fused"]
    for name in order:
        ours = (systems.get(name) or {}).get("test")
        paper = PAPER.get(name)
        if ours is None and paper is None:
            continue
        r = [LABELS[name]] + [_f(ours.get(m) if ours else None) for m in METRICS]
        r += [_rel(ours.get("mrr@10") if ours else None, base)]
        r += [_f(x) for x in (paper or (None,) * 4)]
        r += [_rel(paper[0], PAPER["baseline"][0]) if paper else "–"]
        rows.append(r)
    L += _table(["system"] + [f"ours {h}" for h in HEADERS] + ["ours ΔMRR@10 vs Baseline"]
                + [f"paper {h}" for h in HEADERS] + ["paper ΔMRR@10"], rows)
    L += ["", "ΔMRR@10 is relative to the Baseline of the same table (the paper's Iterative is +13.2% over its "
          "Baseline). The full-doc control (not in the paper) fine-tunes g_0 on full documents with the same "
          "fine-tuning budget as the iterative run (same config, one round per iteration); only it separates "
          "what the summaries add from what fine-tuning adds.", ""]
    if any(k in systems for k in TITLED):
        L += ["The `+ title` rows (not in the paper) index each summary after its document's title "
              "(`evaluate.summary_title`, `resume.lead.join_title`); the summarizer and the retriever are the "
              "paper rows' own, so the rows differ only in what is indexed.", ""]
    fw = {k: (systems.get(k) or {}).get("fusion") for k in ("iterative_fused", "lead_fused", "iterative_titled_fused")}
    if any(fw.values()):
        L += ["Fused systems index each document twice (document and summary/lead) and score "
              "w·cos(q, document) + (1 − w)·cos(q, summary) over the union of both views' top k; w, the "
              "document's weight, was " + "; ".join(
                  f"{_f(v.get('weight'), 2)} for {LABELS[k].split(' (')[0]}"
                  + (f" (chosen on {v['chosen_on']}, MRR@10 {_f(v.get('value'))})" if v.get("chosen_on") else "")
                  for k, v in fw.items() if v) + ".", ""]

    for ref in PAIRED_REFS:
        sig = _significance(systems, ref)
        if sig:
            name = LABELS[ref].split(" (")[0]
            L += [f"Paired tests of {name} against each system on the test queries (per-query MRR@10 and "
                  "NDCG@10; two-sided paired t-test and sign-flip permutation test, `resume.evaluate.paired_test`):",
                  ""]
            L += _table([f"{name} vs", "n queries", "ΔMRR@10", "p (t)", "p (perm.)", "ΔNDCG@10", "p (t)",
                         "p (perm.)"], sig)
            L += [""]

    # iterations
    its = results.get("iterations") or []
    if its:
        L += ["## Iterations of the loop", ""]
        rows = []
        if results.get("s0_dev") or "fixed_summary" in systems:
            fs = (systems.get("fixed_summary") or {}).get("test") or {}
            rows.append(["0 (f_0, g_0)", "–", _f((results.get("s0_dev") or {}).get("mrr@10")),
                         _f(fs.get("mrr@10")), _f(fs.get("ndcg@10")), "–", "–", ""])
        for it in its:
            rows.append([str(it["iteration"]) + (f" (shared: {it['shared_from']})" if it.get("shared_from") else ""),
                         _f(it.get("reward_mean")), _f((it.get("dev") or {}).get("mrr@10")),
                         _f(it["test"].get("mrr@10")), _f(it["test"].get("ndcg@10")), _f(it.get("summary_len"), 1),
                         _f(it.get("separator_rate"), 2), str(it.get("grpo_steps", ""))])
        L += _table(["iteration", "mean GRPO reward", "dev MRR@10", "test MRR@10", "test NDCG@10",
                     "summary length (tokens)", "separator rate", "GRPO steps"], rows)
        st = results.get("stopped") or {}
        es = results.get("early_stopping") or {}
        L += ["", f"Early stopping (eps_reward={es.get('eps_reward')}, eps_metric={es.get('eps_metric')}, "
              f"max_iterations={es.get('max_iterations')}): "
              + (f"stopped after iteration {st['iteration']} ({st['reason']}); that iteration is completed and "
                 f"is the final one." if st.get("iteration") else f"not triggered ({st.get('reason')})."), ""]

    qrows = _quality_rows(results)
    if qrows:
        L += ["## Summary quality (the guard against reward hacking)", ""]
        L += _table(["summaries", "placeholder", "boilerplate", "copy (8-grams)", "distinct-2", "mean tokens",
                     "truncated", "separator", "fixed-judge Δ (g_0)", "fixed-judge reward", "judged docs"], qrows)
        L += ["", "Rates are shares of the corpus's summaries (`resume.quality`). The fixed judge scores every "
              "summary set with the same retriever g_0 on the same training documents held out of GRPO, so "
              "rows compare where the GRPO round rewards (each under a different g_{t-1}) do not. Δ = "
              "RetScore(summary) − RetScore(document), the reward's Δ.", ""]

    # ablations
    abl = results.get("ablations") or {}
    if abl:
        L += ["## Ablations (test split)", ""]
        full = (systems.get("iterative") or {}).get("test")
        rows = [["full method (Iterative)", _f(full.get("ndcg@10") if full else None),
                 _f(full.get("mrr@10") if full else None), str(len(its)), _f(PAPER_ABLATION_NDCG["full"])]]
        for name, ab in abl.items():
            rows.append([LABELS.get(name, name), _f(ab["test"].get("ndcg@10")), _f(ab["test"].get("mrr@10")),
                         str(ab.get("n_iterations", len(ab.get("iterations", [])))),
                         _f(PAPER_ABLATION_NDCG.get(name))])
        L += _table(["variant", "ours NDCG@10", "ours MRR@10", "iterations", "paper NDCG@10"], rows)
        L += [""]

    # out of distribution
    ood = results.get("ood")
    L += ["## Out of distribution", ""]
    if ood:
        osys = ood.get("systems", {})
        obase = (osys.get("baseline") or {}).get("test", {}).get("mrr@10")
        rows = []
        for k, v in osys.items():
            t = v.get("test", v)
            paper = PAPER_OOD.get(k)
            rows.append([LABELS.get(k, k)] + [_f(t.get(m)) for m in METRICS[:3]] + [_rel(t.get("mrr@10"), obase)]
                        + [_f(x) for x in (paper or (None,) * 3)]
                        + [_rel(paper[0], PAPER_OOD["baseline"][0]) if paper else "–"])
        L += [f"The in-domain models on `{ood.get('dataset')}` (split `{ood.get('split')}`), no further training; "
              f"fusion weights are the in-domain ones. Paper: {PAPER_OOD['dataset']}.", ""]
        L += _table(["system", "MRR@10", "NDCG@10", "R@100", "ΔMRR@10 vs Baseline", "paper MRR@10",
                     "paper NDCG@10", "paper R@100", "paper ΔMRR@10"], rows)
        L += [""]
        for ref in PAIRED_REFS:
            sig = _significance(osys, ref)
            if sig:
                name = LABELS[ref].split(" (")[0]
                L += [f"Paired tests of {name} against each system on these queries (as in domain):", ""]
                L += _table([f"{name} vs", "n queries", "ΔMRR@10", "p (t)", "p (perm.)", "ΔNDCG@10", "p (t)",
                             "p (perm.)"], sig)
                L += [""]
        oq = ood.get("quality") or {}
        if oq:
            L += ["Summary quality on the OOD corpus (the fixed judge needs training queries, so only the text "
                  "signals):", ""]
            L += _table(["summaries", "placeholder", "boilerplate", "copy (8-gram)", "distinct-2", "mean tokens",
                         "truncated", "separator"],
                        [[LABELS.get(k, k).split(" (")[0]] + [_f((q.get("text") or {}).get(m), 2) for m in
                         ("placeholder_rate", "boilerplate_rate", "copy_rate", "distinct_2")]
                         + [_f((q.get("text") or {}).get("mean_tokens"), 1)]
                         + [_f((q.get("text") or {}).get(m), 2) for m in ("truncation_rate", "separator_rate")]
                         for k, q in oq.items() if q])
            L += [""]
    else:
        L += [f"No second dataset configured for this run (the paper reports {PAPER_OOD['dataset']}: "
              f"MRR@10/NDCG@10/R@100 {PAPER_OOD['baseline']} → {PAPER_OOD['iterative']}).", ""]

    # plots
    if plots:
        L += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]

    L += ["## Summaries of three documents across iterations", ""]
    L += _summaries_of_three(results)

    # stage times
    times = results.get("stage_seconds") or {}
    if times:
        L += ["## Stage times", ""]
        L += _table(["stage", "runs", "wall seconds (total)", "CPU seconds (total, this process)"],
                    _stage_totals(times, results.get("stage_cpu_seconds") or {}))
        L += ["", "<details><summary>every stage</summary>", ""]
        L += _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in times.items()])
        L += ["", "</details>", ""]
    return "\n".join(L) + "\n"


def write_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.md and <run_dir>/plots/*.png from <run_dir>/results.json; returns the report path."""
    run_dir = Path(run_dir)
    results = read_results(run_dir)
    plots = make_plots(run_dir, results)
    out = run_dir / "report.md"
    atomic_write_text(out, render(results, plots))
    return out


if __name__ == "__main__":
    print(write_report(sys.argv[1]))
