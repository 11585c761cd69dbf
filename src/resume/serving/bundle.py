"""The retriever bundle: everything the retriever service needs, in one directory.

    python -c "from resume.serving.bundle import bundle_from_run_dir; bundle_from_run_dir('runs/demo', 'runs/demo/bundle')"
    python -c "from resume.serving.bundle import bundle_from_run_dir; bundle_from_run_dir('runs/demo', 'runs/demo/fused', mode='fused')"

Layout (format version 1; version 2 = the same plus an index mode other than `summary`):

    <bundle>/
      bundle.json     {"format": "resume-retriever-bundle", "format_version": 1 | 2, "dim", "n_docs",
                       "retriever": {"dir": "retriever", "pooling", "normalize", "max_length", "query_prefix",
                                     "doc_prefix", "batch_size", "dtype"},
                       "index": {"dir": "index", "kind": "flat"|"ivf"|"hnsw", "metric": "inner_product"},
                       "docs": "docs.jsonl", "source": {...}, "created": ISO time,
                       "mode": "summary"|"fused"|"long_only", "fusion": "score"|"rrf"|null,
                       "fusion_weight": float|null, "rrf_k": int|null, "summary_title": bool,
                       "documents": {"index": {...as "index"}, "docs": "documents.jsonl"} | null}
      retriever/      HF encoder dir (what `resume.retriever.Encoder(dir, cfg)` loads)
      index/          `resume.index.DocIndex.save`: index.faiss (FAISS, CPU form) + ids.json (row -> doc id)
      docs.jsonl      {"_id", "summary"} per indexed text, in index row order
      doc_index/      fused only: the document view, same ids in the same rows
      documents.jsonl fused only: {"_id", "text"} per document, in index row order

`summary` holds the text that was indexed (a summary S_t, or the full document for the baseline; under
`long_only` the summary of a document longer than the retriever's window, else the document). The modes
are `EvalConfig.mode`'s, searched as `resume.evaluate` does (`fused`: `resume.index.FusedIndex`). A bundle
without `mode` (written before modes existed) is a `summary` bundle. `summary_title` true: each summary was
indexed after its document's title (`EvalConfig.summary_title`; absent = false).
The bundle is written to a temporary sibling directory and renamed into place, so a reader never
sees half a bundle; an existing bundle at the same path is replaced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resume.config import EvalConfig, ResumeConfig, RetrieverConfig
from resume.errors import ConfigError, DataError, ModelError, ResumeError
from resume.io import atomic_write_json, iter_jsonl, write_jsonl
from resume.run_dir import read_summaries, run_path

FORMAT = "resume-retriever-bundle"
FORMAT_VERSION = 1  # written for mode `summary`; FORMAT_VERSION_MODES for the other modes
FORMAT_VERSION_MODES = 2
BUNDLE_FILE = "bundle.json"
RESULTS_FILE = "results.json"  # of a run directory (`resume.loop`)
_ITER_RE = re.compile(r"^iter_(\d+)$")
_ENCODER_KEYS = ("pooling", "normalize", "max_length", "query_prefix", "doc_prefix", "batch_size", "dtype")


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def read_texts(texts: str | Path | dict[str, str]) -> dict[str, str]:
    """doc id -> text to index: a dict, or a summaries.jsonl read by the run directory's one reader
    (`resume.run_dir.read_summaries`: its policy and its errors, naming the file and the line, as
    `resume evaluate` reads the same file; a repeated id keeps its last row). DataError when there is
    nothing to index."""
    out = {str(k): str(v) for k, v in texts.items()} if isinstance(texts, dict) else read_summaries(texts)
    if not out:
        raise DataError(str(texts) if not isinstance(texts, dict) else "<texts>", None, "no texts to index")
    return out


def read_documents(documents: str | Path | dict[str, str], *, field: str = "text") -> dict[str, str]:
    """doc id -> full text: a dict, a BEIR-layout directory or a BEIR corpus JSONL file ({"_id", "text"},
    optional "title"), as `resume.data.doc_text` of each row (what `resume evaluate` indexes); `field`
    "title": doc id -> title instead ("" where a row has none; a dict is then taken as the titles)."""
    if isinstance(documents, dict):
        return {str(k): str(v) for k, v in documents.items()}
    from resume.data import CORPUS_FILE, doc_text, read_corpus

    path = Path(documents)
    rows = read_corpus(path / CORPUS_FILE if path.is_dir() else path)
    if field == "title":
        return {d["_id"]: str(d.get("title") or "") for d in rows}
    return {d["_id"]: doc_text(d) for d in rows}


def hf_dir(path: str | Path) -> Path:
    """The HF model dir of a stage output: the dir itself, or its `model/` (`final/`, `hf/`) subdir."""
    p = Path(path)
    for d in (p, p / "model", p / "final", p / "hf"):
        if (d / "config.json").is_file():
            return d
    return p


def last_iteration(run_dir: str | Path) -> tuple[Path, Path]:
    """(retriever HF dir, summaries.jsonl) of a run's final iteration.

    Uses `results.json` (`final.retriever` + the last iteration's summaries) when the run wrote one, else
    the highest `iter_NN` that has both `retriever/` and `summaries.jsonl`.
    """
    run_dir = Path(run_dir)
    res = run_dir / RESULTS_FILE
    if res.is_file():
        try:
            r = json.loads(res.read_text(encoding="utf-8"))
            # paths inside the run dir are stored relative to it (resume.run_dir.run_relative)
            ret, summ = run_path(run_dir, r["final"]["retriever"]), run_path(run_dir, r["iterations"][-1]["summaries"])
            if ret and summ and Path(summ).is_file() and hf_dir(ret).is_dir():
                return hf_dir(ret), Path(summ)
        except (KeyError, IndexError, TypeError, json.JSONDecodeError):
            pass
    iters = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _ITER_RE.match(p.name)))
    done = [p for _, p in iters if (hf_dir(p / "retriever") / "config.json").is_file()
            and (p / "summaries.jsonl").is_file()]
    if not done:
        raise ModelError(f"{run_dir}: no iter_NN directory with retriever/ and summaries.jsonl "
                         "(expected a run directory written by `resume run`, see DESIGN §2)")
    return hf_dir(done[-1] / "retriever"), done[-1] / "summaries.jsonl"


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` directory onto `out` (replacing an old `out`)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_retriever_bundle(out_dir: str | Path, *, retriever: Any, texts: str | Path | dict[str, str],
                           cfg: ResumeConfig | RetrieverConfig | None = None, device: str | None = None,
                           source: dict[str, Any] | None = None,
                           documents: str | Path | dict[str, str] | None = None, mode: str | None = None,
                           fusion: str | None = None, fusion_weight: float | None = None,
                           summary_title: bool | None = None) -> Path:
    """Encode `texts` with `retriever` and write a bundle to `out_dir` (atomically). Returns `out_dir`.

    retriever: model name / HF dir, or an already loaded `resume.retriever.Encoder`.
    texts: summaries.jsonl path or {doc_id: text}.
    cfg: `ResumeConfig` (retriever section + evaluate index and mode options) or a bare `RetrieverConfig`
        (flat index, mode summary).
    mode / fusion / fusion_weight: override `cfg.evaluate`'s (see `EvalConfig`). `fused` and `long_only` need
        the full documents: `documents` ({doc_id: text}, a BEIR directory or a {"_id", "text"} JSONL file;
        default `cfg.data.path`), one for every id of `texts`.
    summary_title: override `cfg.evaluate.summary_title`: each text after its document's title, from
        `documents` (a BEIR directory or corpus JSONL with titles; default `cfg.data.path`).
    """
    from resume.evaluate import eval_config, long_only_texts
    from resume.index import DocIndex
    from resume.lead import join_title
    from resume.retriever import Encoder

    rcfg = cfg.retriever if isinstance(cfg, ResumeConfig) else (cfg or RetrieverConfig())
    ecfg = eval_config(cfg if isinstance(cfg, ResumeConfig) else ResumeConfig(evaluate=EvalConfig()), mode=mode,
                       fusion=fusion, fusion_weight=fusion_weight, texts=texts, summary_title=summary_title)
    docs = read_texts(texts)
    ids = list(docs)
    full = None
    if ecfg.mode != "summary" or ecfg.summary_title:
        if documents is None and isinstance(cfg, ResumeConfig):
            documents = cfg.data.path
        if documents is None:
            what = f"a {ecfg.mode} bundle" if ecfg.mode != "summary" else "a bundle with summary_title"
            raise ResumeError(f"{what} needs the full documents (documents=...)")
        if ecfg.summary_title:
            titles = read_documents(documents, field="title")
            missing = [i for i in ids if i not in titles]
            if missing:
                raise DataError(str(documents), None, f"{len(missing)} of {len(ids)} indexed ids have no document "
                                                      f"to take a title from (e.g. {missing[:3]})")
            docs = {i: join_title(titles[i], docs[i]) for i in ids}
    if ecfg.mode != "summary":
        full = read_documents(documents)
        missing = [i for i in ids if i not in full]
        if missing:
            raise DataError(str(documents), None, f"{len(missing)} of {len(ids)} indexed ids have no document "
                                                  f"(e.g. {missing[:3]})")
        full = {i: full[i] for i in ids}
    encoder = retriever if isinstance(retriever, Encoder) else Encoder(str(retriever), rcfg, device=device)
    if ecfg.mode == "long_only":
        docs = long_only_texts(encoder, full, docs)[0]

    def view(texts_by_id: dict[str, str]) -> Any:
        emb = encoder.encode_docs([texts_by_id[i] for i in ids])  # (n, dim)
        # GPU FAISS is a search-time choice; the saved form is always CPU.
        return DocIndex.from_config(ids, emb, dataclasses.replace(ecfg, gpu=False))  # every index setting

    index = view(docs)
    doc_index = view(full) if ecfg.mode == "fused" else None
    fused = doc_index is not None

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        encoder.save(tmp / "retriever")
        index.save(tmp / "index")
        write_jsonl(tmp / "docs.jsonl", ({"_id": i, "summary": docs[i]} for i in ids))
        if fused:
            doc_index.save(tmp / "doc_index")
            write_jsonl(tmp / "documents.jsonl", ({"_id": i, "text": full[i]} for i in ids))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION if ecfg.mode == "summary" else FORMAT_VERSION_MODES,
            "dim": index.dim,
            "n_docs": len(ids),
            "retriever": {"dir": "retriever", **{k: getattr(rcfg, k) for k in _ENCODER_KEYS}},
            "index": {"dir": "index", "kind": index.kind, "metric": "inner_product"},
            "docs": "docs.jsonl",
            "mode": ecfg.mode,
            "fusion": ecfg.fusion if fused else None,
            "fusion_weight": ecfg.fusion_weight if fused and ecfg.fusion == "score" else None,
            "rrf_k": ecfg.rrf_k if fused and ecfg.fusion == "rrf" else None,
            "summary_title": ecfg.summary_title,
            "documents": {"index": {"dir": "doc_index", "kind": doc_index.kind, "metric": "inner_product"},
                          "docs": "documents.jsonl"} if fused else None,
            "source": {"retriever": str(retriever if isinstance(retriever, str | Path) else
                                        getattr(retriever, "name_or_path", type(retriever).__name__)),
                       "texts": str(texts) if not isinstance(texts, dict) else f"<{len(docs)} texts>",
                       **({"documents": str(documents) if not isinstance(documents, dict)
                           else f"<{len(documents)} documents>"}
                          if full is not None or ecfg.summary_title else {}),
                       **(source or {})},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(tmp / BUNDLE_FILE, meta)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def bundle_from_run_dir(run_dir: str | Path, out_dir: str | Path, *, cfg: ResumeConfig | None = None,
                        device: str | None = None, mode: str | None = None,
                        fusion_weight: float | None = None, summary_title: bool | None = None) -> Path:
    """Bundle a run's final retriever over its last summaries (see `last_iteration`), indexed as `mode`.

    A single iteration directory (`retriever/` + `summaries.jsonl`) works too. See `run_bundle_args` for
    the config, the mode, the fusion weight and the documents.
    """
    return build_retriever_bundle(out_dir, device=device,
                                  **run_bundle_args(run_dir, cfg=cfg, mode=mode, fusion_weight=fusion_weight,
                                                    summary_title=summary_title))


def run_fusion_weight(run_dir: str | Path, *, titled: bool = False) -> float | None:
    """The document view's weight the run used for its fused index: `systems.iterative_fused.fusion.weight`
    (`iterative_titled_fused` when `titled`) of its results.json (chosen on dev, unless
    `evaluate.fusion_weight` fixed it); None when there is none."""
    try:
        r = json.loads((Path(run_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
        w = r["systems"]["iterative_titled_fused" if titled else "iterative_fused"]["fusion"]["weight"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return float(w) if isinstance(w, int | float) and not isinstance(w, bool) else None


def run_bundle_args(run_dir: str | Path, *, cfg: ResumeConfig | None = None, mode: str | None = None,
                    fusion_weight: float | None = None, summary_title: bool | None = None) -> dict[str, Any]:
    """The `build_retriever_bundle` arguments (but `out_dir`, `device`) of a run (or iteration) directory,
    checked before any model loads.

    cfg: default the run's `config.yaml` (`find_run_config`), else the defaults. mode: default
    `cfg.evaluate.mode`. fusion_weight (score fusion): default the run's own (`run_fusion_weight`), else
    `evaluate.fusion_weight`; neither is an error. summary_title: default `cfg.evaluate.summary_title`
    (a titled fused index takes the weight of the run's `iterative_titled_fused`). Documents (`fused`,
    `long_only`, or the titles of `summary_title`): the run's materialised working set, `<run_dir>/data` (or a
    parent's, for an iteration directory), else `data.path`.
    """
    from resume.data import CORPUS_FILE
    from resume.evaluate import eval_config

    run_dir = Path(run_dir)
    if (run_dir / "retriever").is_dir() and (run_dir / "summaries.jsonl").is_file():
        retriever, summaries = hf_dir(run_dir / "retriever"), run_dir / "summaries.jsonl"
    else:
        retriever, summaries = last_iteration(run_dir)
    if cfg is None:
        cfg = find_run_config(summaries.parent)
    mode = mode or cfg.evaluate.mode
    titled = cfg.evaluate.summary_title if summary_title is None else bool(summary_title)
    if mode == "fused" and cfg.evaluate.fusion == "score" and fusion_weight is None:
        fusion_weight = run_fusion_weight(run_dir, titled=titled)
        system = "iterative_titled_fused" if titled else "iterative_fused"
        if fusion_weight is None and cfg.evaluate.fusion_weight is None:
            raise ConfigError(f"{run_dir / RESULTS_FILE}: no fusion weight (systems.{system}.fusion.weight) "
                              f"for the fused index: pass --fusion-weight W, or rerun with the {system} system")
    elif fusion_weight is not None and mode != "fused":
        raise ConfigError(f"a fusion weight ({fusion_weight}) is for the fused index; this one is {mode}")
    eval_config(cfg, mode=mode, fusion_weight=fusion_weight, texts=summaries, summary_title=titled)  # the rest
    documents = None
    if mode != "summary" or titled:
        documents = next((d / "data" for d in (run_dir, *run_dir.resolve().parents[:3])
                          if (d / "data" / CORPUS_FILE).is_file()), None)
    return {"retriever": str(retriever), "texts": summaries, "cfg": cfg, "mode": mode,
            "fusion_weight": fusion_weight, "documents": documents, "summary_title": titled,
            "source": {"run_dir": str(run_dir), "summaries": str(summaries)}}


def check_bundle_mode(meta: dict[str, Any], path: str | Path, *, mode: str | None = None,
                      fusion_weight: float | None = None, summary_title: bool | None = None,
                      allow_add: bool = False) -> None:
    """ConfigError when an asked-for index mode, fusion weight or summary_title contradicts a built bundle's
    (`meta`), or when documents are to be added to a titled index (an add request carries no title)."""
    have, w, titled = meta.get("mode") or "summary", meta.get("fusion_weight"), bool(meta.get("summary_title"))
    hint = "(an index mode applies to a run directory, bundled at start-up; omit it or rebuild the bundle)"
    if mode is not None and mode != have:
        raise ConfigError(f"{path}: a {have} bundle, not {mode} {hint}")
    if fusion_weight is not None and (w is None or abs(float(w) - fusion_weight) > 1e-9):
        raise ConfigError(f"{path}: the bundle's fusion weight is {w}, not {fusion_weight} {hint}")
    if summary_title is not None and bool(summary_title) != titled:
        raise ConfigError(f"{path}: a bundle {'with' if titled else 'without'} summary_title, not "
                          f"{'with' if summary_title else 'without'} {hint}")
    refuse_add_to_titled(path, titled=titled, allow_add=allow_add)


def refuse_add_to_titled(where: str | Path, *, titled: bool, allow_add: bool) -> None:
    """The one rule for adding to a titled index (`summary_title`): refused, since an add request carries no
    title. A ConfigError naming `where` (a bundle, a run directory, or the command's flags)."""
    if allow_add and titled:
        raise ConfigError(f"{where}: its summaries are indexed after their titles (summary_title), and an add "
                          "request carries no title: serve it without --allow-add, or a run directory with "
                          "--no-summary-title to add documents")


def find_run_config(path: str | Path) -> ResumeConfig:
    """The run's resolved config next to a model: `config.yaml` (run directory) or `resume_config.json`
    (registry artifacts written by `resume.tracking`) in `path`, `path/artifacts` or up to three parents
    (`<run>/iter_NN/summarizer/model` -> `<run>`); the defaults when there is none."""
    from resume.config import from_dict, load_config

    p = Path(path).resolve()
    for d in (p, p / "artifacts", *list(p.parents)[:3]):
        if (d / "config.yaml").is_file():
            return load_config(d / "config.yaml")
        if (d / "resume_config.json").is_file():
            return from_dict(ResumeConfig, json.loads((d / "resume_config.json").read_text(encoding="utf-8")))
    return load_config(None)


@dataclass
class LoadedBundle:
    """A bundle in memory: the encoder, the index (doc ids inside) and the indexed texts."""

    path: Path
    meta: dict[str, Any]
    encoder: Any  # resume.retriever.Encoder
    index: Any  # resume.index.DocIndex, or a FusedIndex (mode fused)
    texts: list[str]  # index row order, parallel to index.ids (the summary view's texts)

    @property
    def mode(self) -> str:
        return self.meta.get("mode") or "summary"

    @property
    def retriever_config(self) -> RetrieverConfig:
        return retriever_config(self.meta)


def retriever_config(meta: dict[str, Any]) -> RetrieverConfig:
    known = {k: v for k, v in meta.get("retriever", {}).items() if k in _ENCODER_KEYS}
    base = asdict(RetrieverConfig())
    base.update(known)
    return RetrieverConfig(**base)


def read_bundle_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / BUNDLE_FILE
    if not meta_path.is_file():
        raise ModelError(f"{path}: not a retriever bundle ({BUNDLE_FILE} missing)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(str(meta_path), e.lineno, f"not valid JSON: {e.msg}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") not in (FORMAT_VERSION, FORMAT_VERSION_MODES):
        raise ModelError(f"{meta_path}: format_version {meta.get('format_version')!r}; this code reads versions "
                         f"{FORMAT_VERSION} and {FORMAT_VERSION_MODES} (rebuild the bundle with build_retriever_bundle)")
    if meta.get("mode", "summary") not in ("summary", "fused", "long_only"):
        raise ModelError(f"{meta_path}: mode {meta.get('mode')!r}; expected summary, fused or long_only")
    return meta


def bundle_member(path: str | Path, meta: dict[str, Any], field: str, default: str) -> Path:
    """`path / <the bundle.json field>` (dotted `field`, e.g. `index.dir`; `default` when absent), refused
    with ModelError unless it is a relative path that stays inside the bundle (no `..`, no absolute path,
    no symlink out)."""
    value: Any = meta
    for key in field.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    value = default if value is None else value
    root = Path(path)
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"{root / BUNDLE_FILE}: {field} must be a path inside the bundle, got {value!r}")
    target = root / value
    if not target.resolve().is_relative_to(root.resolve()):
        raise ModelError(f"{root / BUNDLE_FILE}: {field} {value!r} points outside the bundle; expected a "
                         f"relative path inside {root}")
    return target


def load_bundle(path: str | Path, *, device: str | None = None, dtype: str | None = None) -> LoadedBundle:
    """Load and cross-check a bundle: encoder, FAISS index and docs.jsonl must agree in size and dim.
    dtype overrides the encoder's retriever.dtype (queries only: the index keeps the vectors it was built with).
    Every path of bundle.json must stay inside the bundle (`bundle_member`)."""
    from resume.index import DocIndex, FusedIndex
    from resume.retriever import Encoder

    path = Path(path)
    meta = read_bundle_meta(path)
    rdir = bundle_member(path, meta, "retriever.dir", "retriever")
    index_dir = bundle_member(path, meta, "index.dir", "index")
    docs_path = bundle_member(path, meta, "docs", "docs.jsonl")
    fused = meta.get("mode") == "fused"
    doc_index_dir = bundle_member(path, meta, "documents.index.dir", "doc_index") if fused else None
    if not rdir.is_dir():
        raise ModelError(f"{rdir}: retriever model directory missing from the bundle")
    index = DocIndex.load(index_dir)
    if not docs_path.is_file():
        raise ModelError(f"{docs_path}: missing from the bundle")
    by_id = {str(r["_id"]): str(r["summary"]) for r in iter_jsonl(docs_path)}
    missing = [i for i in index.ids if i not in by_id]
    if missing or len(by_id) != len(index):
        raise DataError(str(docs_path), None, f"{len(by_id)} documents for an index of {len(index)} rows "
                        f"(ids missing from docs.jsonl: {missing[:5]})")
    texts = [by_id[i] for i in index.ids]
    if fused:
        doc_index = DocIndex.load(doc_index_dir)
        if doc_index.ids != index.ids or doc_index.dim != index.dim:
            raise ModelError(f"{path}: the document view's index does not match the summary index (ids or dim)")
        index = FusedIndex(doc_index, index, fusion=meta["fusion"], weight=meta.get("fusion_weight"),
                           rrf_k=EvalConfig.rrf_k if meta.get("rrf_k") is None else meta["rrf_k"])
    encoder = Encoder(str(rdir), retriever_config(meta), device=device, dtype=dtype)
    if int(encoder.dim) != index.dim or index.dim != int(meta.get("dim", index.dim)):
        raise ModelError(f"{path}: encoder dim {encoder.dim} != index dim {index.dim} "
                         f"(bundle.json says {meta.get('dim')})")
    return LoadedBundle(path=path, meta=meta, encoder=encoder, index=index, texts=texts)
