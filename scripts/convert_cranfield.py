"""Convert the raw SMART Cranfield collection into the bundled BEIR-layout copy (data/cranfield/).

    .venv/bin/python scripts/convert_cranfield.py                      # data/cranfield-raw -> data/cranfield
    .venv/bin/python scripts/convert_cranfield.py RAW_DIR OUT_DIR --seed 13

Same as `resume data convert-cranfield RAW_DIR OUT_DIR --seed 13`; the work is done by
`resume.data.convert_cranfield`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resume.data import convert_cranfield
from resume.errors import ResumeError

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw", nargs="?", default=str(ROOT / "data" / "cranfield-raw"))
    p.add_argument("out", nargs="?", default=str(ROOT / "data" / "cranfield"))
    p.add_argument("--seed", type=int, default=13)
    args = p.parse_args(argv)
    try:
        report = convert_cranfield(args.raw, args.out, seed=args.seed)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
