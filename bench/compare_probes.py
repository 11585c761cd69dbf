"""Compare two bench/grpo_probe.py results document by document (two summarizers, or two settings, judged
on the same documents by the same fixed judge):

    .venv/bin/python bench/compare_probes.py bench/grpo_probe_steps48_amxbf16.json \
        bench/grpo_probe_qwen_steps24_amxbf16.json --round max_steps=48:max_steps=24 \
        --out bench/compare_qwen_smollm2_amx.json

For f_0 (`before`) and, with `--round TAG` (or `--round TAG_A:TAG_B`), for that round's summaries (`after`),
B − A per document with grpo_probe's paired tests, for every view both files judged (`fixed_judge`: the
summary alone; `fixed_judge_titled`: after its title) and on the held-out split's queries where both have
it. Both files must come from one machine (greedy bf16 text depends on the CPU's kernels): the script
stops when their `env.cpu` differ, and when the judged documents are not the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import rel, write_result
from grpo_probe import paired

VIEWS = ("fixed_judge", "fixed_judge_titled")


def compare(a: dict, b: dict) -> dict:
    """B − A for each view both summary sets were judged on (same documents required)."""
    out = {}
    for view in VIEWS:
        if view in a and view in b:
            da, db = a[view]["delta_per_doc"], b[view]["delta_per_doc"]
            if set(da) != set(db):
                raise SystemExit(f"{view}: the two files judged different documents ({len(da)} and {len(db)})")
            out[view] = {"a": a[view]["delta_mean"], "b": b[view]["delta_mean"], **paired(a, b, view)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="the reference probe JSON")
    ap.add_argument("b", help="the probe JSON compared with it (B − A)")
    ap.add_argument("--round", default=None, help="TAG, or TAG_A:TAG_B when the rounds' tags differ")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    if a["env"].get("cpu") != b["env"].get("cpu"):
        raise SystemExit(f"the files come from different CPUs ({a['env'].get('cpu')!r}, {b['env'].get('cpu')!r})")
    doc = {"a": rel(args.a), "b": rel(args.b), "env": {k: b["env"].get(k) for k in ("cpu", "amx_bf16", "torch_threads")},
           "f0": compare(a["before"], b["before"])}
    if a.get("heldout") and b.get("heldout"):
        doc["f0_heldout"] = compare(a["heldout"]["before"], b["heldout"]["before"])
    if args.round:
        ta, _, tb = args.round.partition(":")
        ra, rb = a["rounds"][ta], b["rounds"][tb or ta]
        doc["round"] = {"a": ta, "b": tb or ta, "after": compare(ra["after"], rb["after"])}
        if "heldout" in ra and "heldout" in rb:
            doc["round"]["after_heldout"] = compare(ra["heldout"]["after"], rb["heldout"]["after"])
    parts = [(k, doc[k]) for k in ("f0", "f0_heldout") if k in doc]
    parts += [(f"round {k}", v) for k, v in doc.get("round", {}).items() if isinstance(v, dict)]
    for part, views in parts:
        for view, r in views.items():
            print(f"{part} {view}: A {r['a']:+.4f} B {r['b']:+.4f} B-A {r['gain']:+.4f} "
                  f"({r['better']} / {r['worse']}, t p = {r['t_p']:.3f})")
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
