"""`python -m resume.models`: resolve (convert or cache) model names and print their directories, list the
short names, rebuild the tiny tokenizer."""

from __future__ import annotations

import sys

from resume.errors import ModelError
from resume.models.assets import TINY_TOKENIZER_FILE, build_tiny_tokenizer
from resume.models.fingerprint import model_fingerprint
from resume.models.registry import SHORT_NAMES
from resume.models.resolve import resolve_model


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m resume.models", description="Resolve model names to directories.")
    ap.add_argument("names", nargs="*", help="short names, directories or hub ids")
    ap.add_argument("--list", action="store_true", help="list the short names")
    ap.add_argument("--fingerprint", action="store_true", help="also print each model's fingerprint")
    ap.add_argument("--build-tiny-tokenizer", action="store_true", help=f"rewrite {TINY_TOKENIZER_FILE}")
    args = ap.parse_args(argv)
    if args.build_tiny_tokenizer:
        print(build_tiny_tokenizer())
    if args.list:
        for n, s in SHORT_NAMES.items():
            print(f"{n:30s} {s.kind:10s} {s.description}")
    try:
        for n in args.names:
            path = resolve_model(n)
            print(f"{n}\t{path}" + (f"\t{model_fingerprint(path)}" if args.fingerprint else ""))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
