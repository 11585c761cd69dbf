"""The working set <run_dir>/data as MLflow dataset inputs of a run (`working_set_datasets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from resume.config import ResumeConfig
from resume.tracking.runs import _fluent


def working_set_datasets(run_dir: str | Path, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The working set <run_dir>/data as `mlflow.data` pandas datasets: one per judged split (rows: query_id,
    query, doc_id, score) and `corpus` (doc_id, title, text); name `<data>-<split>`, source the working-set
    dir, digest MLflow's hash of the rows. {} when the run dir has no working set."""
    import warnings

    import mlflow.data
    import pandas as pd

    from resume.data import CORPUS_FILE, load_beir
    from resume.run_dir import DATA

    data_dir = Path(run_dir).resolve() / DATA
    if not (data_dir / CORPUS_FILE).exists():
        return {}
    ds = load_beir(data_dir)
    base = Path(str(((results or {}).get("data") or {}).get("source") or data_dir)).name
    frames = {split: pd.DataFrame([(q, ds.queries[q], d, int(score)) for q, rels in qrels.items()
                                   for d, score in rels.items()], columns=["query_id", "query", "doc_id", "score"])
              for split, qrels in ds.qrels.items()}
    frames["corpus"] = pd.DataFrame([(d, doc.get("title") or "", doc.get("text") or "") for d, doc in ds.corpus.items()],
                                    columns=["doc_id", "title", "text"])
    with warnings.catch_warnings():  # MLflow warns that a local path source is resolved by guessing its kind
        warnings.simplefilter("ignore")
        return {k: mlflow.data.from_pandas(df, source=str(data_dir), name=f"{base}-{k}") for k, df in frames.items()}


def _log_datasets(uri: str, run_id: str, datasets: dict[str, Any], used: list[tuple[str, str]]) -> None:
    """`mlflow.log_inputs` of the named datasets into a run: used = [(dataset key, context)], keys missing
    from `datasets` skipped. Logging a dataset again is a no-op in MLflow."""
    pairs = [(datasets[k], ctx) for k, ctx in used if k in datasets]
    if not pairs:
        return
    import warnings

    with _fluent(uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "integer columns cannot hold missing values": qrels scores are ints
        mlflow.log_inputs([d for d, _ in pairs], contexts=[c for _, c in pairs], tags_list=[None] * len(pairs))


def _used(cfg: ResumeConfig, results: dict[str, Any]) -> list[tuple[str, str]]:
    """(dataset key, context) of a training run: train split + corpus, the dev and test splits."""
    splits = {**{"train": cfg.data.train_split, "dev": cfg.data.dev_split, "test": cfg.data.test_split},
              **(results.get("splits") or {})}
    return [(splits["train"], "training"), ("corpus", "training"), (splits["dev"], "evaluation"),
            (splits["test"], "evaluation")]
