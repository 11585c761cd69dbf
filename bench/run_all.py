"""Run every benchmark in bench/ one after the other and collect their JSON into one file.

    .venv/bin/python bench/run_all.py --out bench/results.json [--only encode,index]

Each bench_<name>.py writes its own JSON (with the baseline it is compared against, in the same run)
to bench/out/bench_<name>.json; this script adds the machine, the date and the wall time of each.
Benchmarks run sequentially: the machines are small and noisy, so nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - machine info is best effort
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--only", help="comma-separated names, e.g. encode,index (default: all)")
    args = p.parse_args(argv)
    names = sorted(f.stem.removeprefix("bench_") for f in HERE.glob("bench_*.py"))
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        unknown = wanted - set(names)
        if unknown:
            p.error(f"unknown benchmark(s) {sorted(unknown)}; available: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("benchmarks", {})
    failed = []
    for name in names:
        js = HERE / "out" / f"bench_{name}.json"
        js.parent.mkdir(parents=True, exist_ok=True)
        print(f"== bench_{name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py"), "--out", str(js)])
        wall = time.perf_counter() - t0
        if rc != 0 or not js.exists():
            failed.append(name)
            print(f"   bench_{name} failed (exit {rc})", flush=True)
            continue
        entry = json.loads(js.read_text())
        entry["_wall_s"] = round(wall, 1)
        entry["_date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results["benchmarks"][name] = entry
    results["machine"] = machine()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")  # key order kept: small diffs
    tmp.replace(out)
    print(f"wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
