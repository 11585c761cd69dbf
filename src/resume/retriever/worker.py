"""`main`: the command line of one torchrun worker (`python -m resume.retriever`, run through `__main__`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from resume.config import ResumeConfig, from_dict
from resume.errors import ResumeError
from resume.retriever.train import _env_int, train_worker


def main(argv: list[str] | None = None) -> int:
    """Entry point of each torchrun worker (`python -m resume.retriever --help`)."""
    ap = argparse.ArgumentParser(prog="python -m resume.retriever", description=main.__doc__)
    ap.add_argument("--config-json", required=True, help="resolved config (ResumeConfig.to_dict() as JSON)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--init-model", required=True)
    ap.add_argument("--texts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rank = _env_int("RANK", 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(message)s", stream=sys.stdout)
    try:
        cfg = from_dict(ResumeConfig, json.loads(Path(args.config_json).read_text(encoding="utf-8")))
        train_worker(cfg, data_dir=args.data, split=args.split, init_model=args.init_model, texts=args.texts,
                     out_dir=args.out)
    except ResumeError as e:
        print(f"[rank {rank}] error: {e}", file=sys.stdout, flush=True)
        return 2
    return 0
