"""The `resume` command line: one subcommand per stage, `resume run` for the whole loop.

    resume data validate data/cranfield
    resume evaluate --config configs/demo.yaml --data data/cranfield --split test --retriever all-minilm-l6-v2 --out runs/base
    resume evaluate --texts S.jsonl --mode fused --choose-weight-on dev --split test --out runs/fused
    resume run --config configs/demo.yaml --out runs/demo

User errors (bad config, malformed data, unknown model, an output location that cannot be written, a file
that cannot be read or is not UTF-8 text) print one line `error: ...` and exit with 2. Output locations
(`--out` and friends) are checked before any work starts (`resume.io.check_output`). Heavy libraries are
imported inside the handlers, so `resume --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from resume.errors import ResumeError

Handler = Callable[[argparse.Namespace], int | None]


def _config(args: argparse.Namespace):
    from resume.config import load_config

    return load_config(getattr(args, "config", None), getattr(args, "set", None))


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config (configs/tiny.yaml, demo.yaml, paper.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set grpo.max_steps=2 (repeatable)")


# ---------------------------------------------------------------------------------------------- data


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from resume.data import validate_dataset

    report = validate_dataset(args.dir)
    print(json.dumps(report, indent=2) if args.json else report.pop("_text", json.dumps(report, indent=2)))
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from resume.data import dataset_stats

    print(json.dumps(dataset_stats(args.dir, tokenizer=args.tokenizer), indent=2))
    return 0


def _cmd_data_convert_cranfield(args: argparse.Namespace) -> int:
    from resume.data import convert_cranfield

    print(json.dumps(convert_cranfield(args.raw, args.out, seed=args.seed), indent=2))
    return 0


def _cmd_data_convert_medline(args: argparse.Namespace) -> int:
    from resume.data import convert_medline

    tokenizer = None if args.tokenizer.lower() == "none" else args.tokenizer
    print(json.dumps(convert_medline(args.raw, args.out, tokenizer=tokenizer), indent=2))
    return 0


def _cmd_data_lead(args: argparse.Namespace) -> int:
    from resume.lead import write_lead_summaries

    print(json.dumps(write_lead_summaries(args.data, args.out, retriever_tokenizer=args.retriever), indent=2))
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from resume.data import load_hf_dataset

    out = load_hf_dataset(args.name, args.out, split=args.split)
    print(out)
    return 0


# -------------------------------------------------------------------------------------------- stages


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from resume.evaluate import compute_metrics, read_qrels_any, read_trec_run

    conflicts: list[tuple[int, str, str, int, int]] = []
    qrels = read_qrels_any(args.qrels, conflicts=conflicts)
    run = read_trec_run(args.run)
    if conflicts:
        line, qid, did, old, new = conflicts[0]
        _warn(f"{args.qrels}: {len(conflicts)} conflicting judgement(s) of the same query and document; the last "
              f"one is kept (first at line {line}: query {qid}, document {did}: grade {old}, then {new})")
    if not set(qrels) & set(run):
        _warn(f"the run ({len(run)} queries) and the qrels ({len(qrels)} queries) share no query id, so every "
              f"metric is 0: are they of the same split and id scheme? (run: {', '.join(sorted(run)[:3])}; "
              f"qrels: {', '.join(sorted(qrels)[:3])})")
    print(json.dumps(compute_metrics(qrels, run), indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.evaluate import eval_config, evaluate_retrieval

    choose = args.choose_weight_on
    if choose and args.fusion_weight is not None:
        raise ResumeError("--fusion-weight and --choose-weight-on exclude each other (give the weight or choose it)")
    # Every argument is checked here, before a model loads.
    cfg.evaluate = eval_config(cfg, mode=args.mode, fusion=args.fusion, fusion_weight=args.fusion_weight,
                               texts=args.texts, weight_later=bool(choose), summary_title=args.summary_title)
    if choose and (cfg.evaluate.mode, cfg.evaluate.fusion) != ("fused", "score"):
        raise ResumeError("--choose-weight-on chooses the document weight of score fusion: use it with "
                          "--mode fused --fusion score")
    data, retriever = args.data or cfg.data.path, args.retriever or cfg.retriever.model
    encoder = None
    if choose:
        from resume.evaluate import CachingEncoder, choose_fusion_weight, load_encoder
        from resume.io import atomic_write_json

        encoder = CachingEncoder(load_encoder(cfg, retriever))  # both views are encoded once for both splits
        choice = choose_fusion_weight(cfg, data_dir=data, split=choose, retriever=retriever, texts=args.texts,
                                      encoder=encoder)
        print(f"fusion weight on {choose} ({choice['metric']}): "
              + "  ".join(f"{w:g}: {v:.4f}" for w, v in choice["curve"].items())
              + f"  -> weight {choice['weight']:g}", file=sys.stderr)
        atomic_write_json(f"{args.out}/fusion_weight.json", choice)
        cfg.evaluate.fusion_weight = choice["weight"]
    metrics = evaluate_retrieval(cfg, data_dir=data, split=args.split, retriever=retriever, texts=args.texts,
                                 out_dir=args.out, encoder=encoder)
    sampled = {k: v for k, v in (("data.max_train_queries", cfg.data.max_train_queries),
                                 ("data.max_eval_queries", cfg.data.max_eval_queries),
                                 ("data.distractors", cfg.data.distractors)) if v is not None}
    if sampled:  # e.g. a run's config.yaml reused on another dataset: say that a working set was evaluated
        from resume.evaluate import read_eval_info

        info = read_eval_info(args.out)
        print(f"note: the config selects a working set ({', '.join(f'{k}={v}' for k, v in sampled.items())}): "
              f"{info.get('n_queries')} queries over {info.get('n_docs')} documents of {data} were evaluated; "
              f"--set {'=null --set '.join(sampled)}=null evaluates the whole split", file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_retriever_finetune(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.retriever import finetune_retriever
    out = finetune_retriever(cfg, data_dir=args.data or cfg.data.path, split=args.split or cfg.data.train_split,
                             init_model=args.retriever or cfg.retriever.model, texts=args.texts,
                             out_dir=args.out)
    print(out)
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.summarizer import summarize_corpus
    stats = summarize_corpus(cfg, data_dir=args.data or cfg.data.path,
                             model=args.summarizer or cfg.summarizer.model,
                             retriever=args.retriever or cfg.retriever.model, out_path=args.out)
    print(json.dumps(stats, indent=2))
    return 0


def _cmd_grpo_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.grpo import grpo_train
    out = grpo_train(cfg, data_dir=args.data or cfg.data.path, summarizer=args.summarizer or cfg.summarizer.model,
                     retriever=args.retriever or cfg.retriever.model, out_dir=args.out)
    print(out)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.loop import run_loop
    if args.systems:
        cfg.loop.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        cfg.loop.__post_init__()
    if args.ablations is not None:
        cfg.loop.ablations = [s.strip() for s in args.ablations.split(",") if s.strip()]
        cfg.loop.__post_init__()
    result = run_loop(cfg, out_dir=args.out, force=getattr(args, "force", False))
    print(f"report: {result['report']}")
    return 0


class _HelpConfig(argparse.Action):
    """`--help-config`: print every config key with its default and meaning, then exit (as --help does:
    before the other arguments are checked, so `resume run --help-config` needs no --out; loads no model)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from resume.config import format_config_help

        print(format_config_help(), end="")
        parser.exit()


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.config:
        args.config = "configs/demo.yaml"
    return _cmd_run(args)


def _cmd_register(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from resume.tracking import register_models
    print(json.dumps(register_models(cfg, run_dir=args.run_dir), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from resume.serving import serve

    serve(args.kind, model=args.model, http_port=args.http_port, grpc_port=args.grpc_port, name=args.name,
          summarizer=args.summarizer, config=args.config, device=args.device, max_batch_size=args.max_batch_size,
          max_wait_ms=args.max_wait_ms, max_k=args.max_k, max_body_bytes=args.max_body_bytes,
          max_chars=args.max_chars, allow_add=args.allow_add, max_added_docs=args.max_added_docs,
          model_repository=args.enable_model_repository, host=args.host, access_log=not args.no_access_log,
          threads=args.threads, dtype=args.dtype, index_mode=args.index_mode, fusion_weight=args.fusion_weight,
          summary_title=args.summary_title)
    return 0


def _outputs(p: argparse.ArgumentParser, *outputs: tuple[str, str, str]) -> None:
    """Declare a subcommand's outputs as (dest, kind, name in messages); kind: "file", "dir", or "summaries"
    (a file plus its resumable `<file>.cache.jsonl`). `check_outputs` checks them."""
    p.set_defaults(outputs=outputs)


def check_outputs(args: argparse.Namespace) -> None:
    """Every declared output location of the command must be writable (`resume.io.check_output`), before
    the command loads a config, reads data or touches a model."""
    from resume.io import check_output

    for dest, kind, name in getattr(args, "outputs", ()):
        value = getattr(args, dest, None)
        if value is None:
            continue
        check_output(value, kind="dir" if kind == "dir" else "file", what=name)
        if kind == "summaries":
            from resume.summarizer import cache_path_for

            check_output(cache_path_for(value), kind="file", what=f"{name} (its cache file)")


# ------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resume", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="validate, describe and convert datasets (BEIR layout)")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("validate", help="check a BEIR-layout directory and print counts")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_data_validate)
    p = dsub.add_parser("stats", help="counts per split and length percentiles in tokens")
    p.add_argument("dir")
    p.add_argument("--tokenizer", default="all-minilm-l6-v2", help="model name whose tokenizer counts tokens")
    p.set_defaults(func=_cmd_data_stats)
    p = dsub.add_parser("convert-cranfield", help="convert the raw SMART Cranfield files to BEIR layout")
    p.add_argument("raw", help="folder with cran.all.1400, cran.qry, cranqrel")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=13)
    p.set_defaults(func=_cmd_data_convert_cranfield)
    _outputs(p, ("out", "dir", "out"))
    p = dsub.add_parser("convert-medline", help="convert the raw SMART MEDLINE files to BEIR layout (OOD test set)")
    p.add_argument("--raw", default="data/medline-raw", help="folder with MED.ALL, MED.QRY, MED.REL")
    p.add_argument("--out", default="data/medline")
    p.add_argument("--tokenizer", default="all-minilm-l6-v2",
                   help="model whose tokenizer measures the lengths written in README.md; 'none' skips them")
    p.set_defaults(func=_cmd_data_convert_medline)
    _outputs(p, ("out", "dir", "--out"))
    p = dsub.add_parser("download", help="load a hub dataset through `datasets` and write it in BEIR layout")
    p.add_argument("name", help="e.g. BeIR/scifact, BeIR/nfcorpus, msmarco, or a `datasets` save_to_disk dir")
    p.add_argument("out")
    p.add_argument("--split", default="test")
    p.set_defaults(func=_cmd_data_download)
    _outputs(p, ("out", "dir", "out"))
    p = dsub.add_parser("lead", help="the lead control: title + first sentence of each document, as summaries.jsonl")
    p.add_argument("--data", required=True, help="BEIR-layout directory")
    p.add_argument("--out", required=True, help="summaries.jsonl to write")
    p.add_argument("--retriever", help="model whose tokenizer counts n_tokens (default: retriever.model's default)")
    p.set_defaults(func=_cmd_data_lead)
    _outputs(p, ("out", "file", "--out"))

    p = sub.add_parser("metrics", help="MRR@10, NDCG@10, R@100, R@1000 of a TREC run (trec_eval semantics)")
    p.add_argument("--qrels", required=True, help="qrels: BEIR tsv (with header) or TREC 4-column")
    p.add_argument("--run", required=True, help="TREC run file")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("evaluate", help="index texts with FAISS, search a split, write run.trec + metrics.json")
    _add_config(p)
    p.add_argument("--data", help="BEIR-layout directory (default: data.path)")
    p.add_argument("--split", default="test")
    p.add_argument("--retriever", help="retriever model (default: retriever.model)")
    p.add_argument("--texts", help="summaries.jsonl to index instead of the full documents")
    p.add_argument("--mode", choices=["summary", "fused", "long_only"],
                   help="summary: the summaries (full documents without --texts); fused: document + summary "
                   "views fused; long_only: the summary only for documents over the retriever's window "
                   "(default: evaluate.mode)")
    p.add_argument("--fusion", choices=["score", "rrf"], help="fused mode: weighted cosines or reciprocal rank "
                   "fusion (default: evaluate.fusion)")
    p.add_argument("--fusion-weight", type=float, metavar="W",
                   help="score fusion: weight of the document view in [0, 1] (default: evaluate.fusion_weight)")
    p.add_argument("--choose-weight-on", metavar="SPLIT",
                   help="score fusion: choose the weight on this split (e.g. dev) first; the curve goes to stderr "
                   "and <out>/fusion_weight.json")
    p.add_argument("--summary-title", action=argparse.BooleanOptionalAction, default=None,
                   help="index each summary after its document's title, or not (default: evaluate.summary_title, "
                   "which full documents ignore; beyond the paper)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_evaluate)
    _outputs(p, ("out", "dir", "--out"))

    p = sub.add_parser("retriever-finetune", help="contrastive fine-tuning (InfoNCE, DDP under torchrun)")
    _add_config(p)
    p.add_argument("--data")
    p.add_argument("--split")
    p.add_argument("--retriever", help="initial retriever g_{t-1}")
    p.add_argument("--texts", help="summaries.jsonl (default: full documents)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_retriever_finetune)
    _outputs(p, ("out", "dir", "--out"))

    p = sub.add_parser("summarize", help="summarise a corpus (greedy, batched, cached, resumable)")
    _add_config(p)
    p.add_argument("--data")
    p.add_argument("--summarizer", help="summarizer model (default: summarizer.model)")
    p.add_argument("--retriever", help="model whose tokenizer counts summary tokens")
    p.add_argument("--out", required=True, help="summaries.jsonl")
    p.set_defaults(func=_cmd_summarize)
    _outputs(p, ("out", "summaries", "--out"))

    p = sub.add_parser("grpo-train", help="GRPO training of the summarizer with the retriever as reward model")
    _add_config(p)
    p.add_argument("--data")
    p.add_argument("--summarizer")
    p.add_argument("--retriever")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_grpo_train)
    _outputs(p, ("out", "dir", "--out"))

    for name, func, help_ in (("run", _cmd_run, "run Algorithm 1 with baselines, ablations, tracking, report"),
                              ("demo", _cmd_demo, "the embedded default: `resume run` on the demo config")):
        p = sub.add_parser(name, help=help_)
        _add_config(p)
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--systems", help="comma-separated systems (default: loop.systems)")
        p.add_argument("--ablations", help="comma-separated ablations (default: loop.ablations)")
        p.add_argument("--force", action="store_true",
                       help="continue a run dir whose config.yaml differs (completed stages are kept)")
        p.add_argument("--help-config", action=_HelpConfig,
                       help="print every config key (dotted, e.g. grpo.learning_rate) with its default and meaning")
        p.set_defaults(func=func)
        _outputs(p, ("out", "dir", "--out"))

    p = sub.add_parser("register", help="register the run's summarizer and retriever in the MLflow registry")
    _add_config(p)
    p.add_argument("--run-dir", required=True)
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("serve", help="serve the retriever or the summarizer with KServe")
    p.add_argument("kind", choices=["retriever", "summarizer"])
    p.add_argument("--model", required=True, help="run dir, model dir, or models:/resume-retriever@champion")
    p.add_argument("--name", help="model name in the URL (default: resume-<kind>)")
    p.add_argument("--summarizer", help="retriever only: summarizer used to add new documents")
    p.add_argument("--index-mode", choices=["summary", "fused", "long_only"],
                   help="retriever from a run directory: the index to build (fused: document + summary views, "
                   "as the run's iterative_fused system; default: the run's evaluate.mode); a built bundle "
                   "must agree")
    p.add_argument("--fusion-weight", type=float, metavar="W",
                   help="fused index: weight of the document view in [0, 1] (default: the run's own, "
                   "results.json systems.iterative_fused.fusion.weight)")
    p.add_argument("--summary-title", action=argparse.BooleanOptionalAction, default=None,
                   help="retriever run directory: index each summary after its document's title, as the run's "
                   "iterative_titled systems, or not (default: the run's evaluate.summary_title); a titled index "
                   "takes no --allow-add")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=8081, help="gRPC port; 0 disables gRPC")
    p.add_argument("--config", "-c", help="YAML config for the summarizer's prompt/generation settings "
                   "(default: the run's config.yaml next to the model, else the defaults)")
    p.add_argument("--device", help="cpu, cuda (default: the model loader's choice)")
    p.add_argument("--max-batch-size", type=int, default=32, help="retriever micro-batch size; 1 disables batching")
    p.add_argument("--max-wait-ms", type=float, default=8.0, help=(
        "the longest a micro-batch waits to fill; it waits only while it is smaller than the recent batches, "
        "so a lone request under light load goes at once"))
    p.add_argument("--max-k", type=int, default=1000, help="largest k accepted (also capped by the index size)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="larger request bodies get 413")
    p.add_argument("--max-chars", type=int, default=20_000, help="longest document accepted (characters)")
    add = p.add_mutually_exclusive_group()
    add.add_argument("--allow-add", action="store_true",
                     help="retriever: register the <name>-add model, through which any client that reaches the "
                     "port can add documents (in this replica's memory only); off by default")
    add.add_argument("--read-only", action="store_true",
                     help="retriever: no <name>-add model (the default; states it explicitly, e.g. in a manifest)")
    p.add_argument("--max-added-docs", type=int, default=1000,
                   help="with --allow-add: how many documents may be added over the server's life")
    p.add_argument("--enable-model-repository", action="store_true",
                   help="turn on kserve's model repository extension (REST /v2/repository/models/<name>/load|"
                   "unload, gRPC RepositoryModelLoad|Unload); off by default: an unloaded model stays unloaded")
    p.add_argument("--host", help="REST and gRPC bind address (default: kserve's 0.0.0.0 and [::]; 127.0.0.1 = "
                   "this machine only)")
    p.add_argument("--no-access-log", action="store_true", help="no per-request access/timing log lines")
    p.add_argument("--threads", type=int, help="torch threads (default: usable cores - 1, at least 1)")
    p.add_argument("--dtype", choices=["auto", "native", "float32", "bfloat16", "float16"],
                   help="weights dtype of the served model (the retriever's encoder, or the summarizer); default: "
                   "the model's config (auto = bf16 on GPU, fp32 on CPU; native = bf16 also on CPUs with AMX or "
                   "AVX512-BF16); bfloat16 pays only on such CPUs")
    p.set_defaults(func=_cmd_serve)
    return parser


def _os_error(e: OSError) -> str:
    """An OSError as `<file>: <reason>` (both files of a rename), without the `[Errno N]` prefix."""
    files = [str(f) for f in (e.filename, e.filename2) if f is not None]
    reason = e.strerror or str(e)
    return f"{' -> '.join(files)}: {reason}" if files else reason


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written (permissions, disk full, a directory...)
        print(f"error: {_os_error(e)}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:
        print(f"error: an input file is not UTF-8 text ({e.reason} at byte {e.start})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
