"""MLflow tracking and registry for a run directory written by `resume.loop`.

    resume run --config configs/tiny.yaml --out runs/tiny      # tracks + registers at the end
    resume register --config configs/tiny.yaml --run-dir runs/tiny
    mlflow ui --backend-store-uri sqlite:///runs/tiny/mlflow.db

Tracking URI: `tracking.tracking_uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<run_dir>/mlflow.db` with
artifacts in <run_dir>/mlartifacts.

Runs. One parent run per run directory (`resume run`), opened when the loop starts (status RUNNING, the
flattened config as params) and completed at the end (FINISHED), or ended FAILED when the loop raises,
interrupted included (`parent_run`). A killed run that is rerun reopens the same parent
(its id is kept in <run_dir>/tracking.json). Everything else is logged from the run directory's files
(results.json, reward logs, eval dirs) once the loop has finished, so what MLflow shows is exactly what
the run dir holds, whatever was resumed:
  parent:   params; reward + its parts per GRPO step (step = global step across iterations); per-iteration
            dev/test MRR@10, NDCG@10, R@100, R@1000, mean reward, summary length, separator rate
            (step = iteration); test metrics per system; stage times; artifacts report.md, plots/,
            results.json, config.yaml, sample summaries.
  nested:   `iter_XX` per iteration (its metrics, reward per global step, stage times, eval run files),
            `system/<name>` per system (test metrics, run.trec), `ablation/<name>` per ablation.
Metric names replace `@` (not allowed by MLflow) with `_at_`: `test/mrr_at_10`.

Live GRPO metrics (`live_grpo`). While a round trains, `resume.loop` wraps the grpo-train stage in
`live_grpo(...)`: it creates the round's nested run (`iter_XX`, or `ablation/<name>`) up front and names it in
`MLFLOW_TRACKING_URI` / `MLFLOW_RUN_ID` (+ `RESUME_GRPO_STEP_OFFSET`, the global step of the round's step 0),
the variables KFP >= 2.17's MLflow integration injects into every task too; `resume.grpo`'s MLflow callback
then logs `grpo/<part>` at each logging step, as the replay above names them. The replay stays the fallback
(tracking off during training, Ray workers elsewhere, a failed live write): it logs only the (metric, step)
pairs a run does not have yet, so nothing is logged twice.

Datasets and experiment kind. The experiment carries `mlflow.experimentKind = custom_model_development` (the
tag MLflow 3's UI reads to open the classic training view instead of the GenAI one). Each run gets the
working set (<run_dir>/data) as dataset inputs (`mlflow.log_inputs`, `mlflow.data.from_pandas`: name
`<data>-<split>`, digest of the rows, source = the working-set dir): the train-split judgements and the
corpus as "training", the dev and test splits as "evaluation" (systems: the test split only).

Registry (`register_models`). The final summarizer f_T and retriever g_T are logged as MLflow pyfunc models
(python_model = `SummarizerModel` / `RetrieverModel` of `pyfunc`, with a signature (`model_signature`: one string
column in, `params` declared) and the `resume` package source as `code_paths`, so they load with MLflow's
listed requirements alone, outside the project image; the model dir as an artifact; the retriever also
carries the serving bundle: model dir + FAISS index + docs.jsonl + bundle.json, when resume.serving provides
`build_retriever_bundle`) and registered as new versions of `tracking.summarizer_name` / `retriever_name`.
Each version is tagged with the run's test MRR@10 of the iterative system. Champion rule: the alias
`tracking.alias` moves to the new versions when no version holds it yet, or when the new test MRR@10 is
>= the MRR@10 tagged on the current champion (ties go to the newer model). Both names move together, so the
champion summarizer and retriever are always a matched pair. Note that the comparison does not check that
both runs used the same dataset: use different registered names per dataset.

    mlflow.pyfunc.load_model("models:/resume-retriever@champion").predict(["what is a shock wave?"])
    # -> list of embeddings; params={"kind": "doc"} embeds documents; a one-column DataFrame works too

One module per job; every name other code uses is imported here, so `from resume.tracking import ...` works:

    runs      tracking/registry URIs, the experiment, <run_dir>/tracking.json, nested runs, metric writes,
              the parent run (`start_parent`, `parent_run`)
    live      the GRPO reward series: `live_grpo` while a round trains, `replay_reward_log`, `grpo_step_offset`
    datasets  the working set as MLflow dataset inputs (`working_set_datasets`)
    log       `log_run`: a finished run dir's results into the parent and nested runs
    pyfunc    the pyfunc models `RetrieverModel` and `SummarizerModel`
    registry  `register_models`: log, register, move the champion alias (`model_signature`, code_paths)
"""

from __future__ import annotations

from resume.tracking.datasets import working_set_datasets
from resume.tracking.live import STEP_OFFSET_ENV, grpo_step_offset, live_grpo, replay_reward_log
from resume.tracking.log import _sample_summaries as _sample_summaries
from resume.tracking.log import log_run
from resume.tracking.pyfunc import RetrieverModel, SummarizerModel
from resume.tracking.registry import model_signature, register_models
from resume.tracking.runs import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    STATE,
    metric_name,
    parent_run,
    registry_uri,
    start_parent,
    tracking_uri,
)
from resume.tracking.runs import _fluent as _fluent

__all__ = [
    "STATE", "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND", "STEP_OFFSET_ENV", "tracking_uri", "registry_uri",
    "metric_name", "start_parent", "parent_run", "grpo_step_offset", "replay_reward_log", "live_grpo",
    "working_set_datasets", "log_run", "RetrieverModel", "SummarizerModel", "model_signature", "register_models",
]
