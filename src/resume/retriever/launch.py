"""`finetune_retriever`: the launcher, fine-tuning in this process (nproc 1) or under torchrun (nproc > 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from resume.config import ResumeConfig
from resume.errors import DataError, ResumeError
from resume.io import atomic_write_json
from resume.retriever.train import _env_int, train_worker


def finetune_retriever(cfg: ResumeConfig, *, data_dir, split: str, init_model: str, texts: str | None = None,
                       out_dir) -> str:
    """Contrastive fine-tuning of `init_model` on (training query, text of a relevant document) pairs.

    texts: summaries.jsonl ({"_id", "summary"}), None = full documents. Returns `out_dir/model`.
    finetune.nproc > 1 launches `torchrun --standalone --nproc_per_node N -m resume.retriever ...` (its output
    is streamed; a failure raises ResumeError with the last lines); 1 runs in this process without DDP.
    """
    from resume.models import resolve_model

    out = Path(out_dir)
    init_path = resolve_model(init_model)  # resolve (and build/convert) once, before any rank starts
    if texts is not None and not Path(texts).is_file():
        raise DataError(texts, None, "summaries file not found; expected a summaries.jsonl from `resume summarize`")
    nproc = cfg.finetune.nproc
    if nproc == 1 or _env_int("WORLD_SIZE", 1) > 1:
        return train_worker(cfg, data_dir=data_dir, split=split, init_model=init_path, texts=texts, out_dir=out)

    out.mkdir(parents=True, exist_ok=True)
    cfg_json = out / "finetune_config.json"
    atomic_write_json(cfg_json, cfg.to_dict())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "resume.retriever", "--config-json", str(cfg_json), "--data", str(data_dir), "--split", split,
           "--init-model", init_path, "--out", str(out)]
    if texts is not None:
        cmd += ["--texts", str(texts)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    tail: deque[str] = deque(maxlen=25)
    rank_error = None  # the first `[rank N] error: ...` line (a ResumeError inside a worker)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
            if rank_error is None and "] error: " in line:
                rank_error = line.split("] error: ", 1)[1].strip()
        rc = proc.wait()
    except BaseException:
        proc.terminate()  # torchrun stops its workers on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc != 0:
        if rank_error is not None:
            raise ResumeError(rank_error)
        raise ResumeError(f"retriever fine-tuning under torchrun failed (exit code {rc}); last output:\n    "
                          + "\n    ".join(tail))
    return str(out / "model")
