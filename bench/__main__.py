"""Run every benchmark in ``bench/bench_*.py`` and write a JSON file plus a Markdown table.

Each benchmark module exposes ``run(quick: bool) -> dict``. Ratios inside one module are
measured in the same run on the same machine; absolute times are labelled with the machine.

Usage: ``python -m bench [--quick] [--only showers,generators] [--out bench/results]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path


def _machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _flatten(prefix: str, obj: object, rows: list[tuple[str, str]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, float):
        rows.append((prefix, f"{obj:.4g}"))
    elif isinstance(obj, (list, tuple)) and len(obj) > 8:
        rows.append((prefix, f"[{len(obj)} values]"))
    else:
        rows.append((prefix, str(obj)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (minutes instead of tens of minutes)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (e.g. showers,validation)")
    ap.add_argument("--out", default="bench/results", help="output folder for results.json and results.md")
    args = ap.parse_args(argv)

    here = Path(__file__).parent
    names = sorted(p.stem[len("bench_") :] for p in here.glob("bench_*.py"))
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"error: unknown benchmark(s) {unknown}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        names = wanted

    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "quick": args.quick,
        "benchmarks": {},
    }
    failed = 0
    for name in names:
        print(f"== bench_{name}", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.bench_{name}")
            res = mod.run(quick=args.quick)
            status = "ok"
        except Exception as err:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            res = {"error": f"{type(err).__name__}: {err}"}
            status = "error"
            failed += 1
        res = dict(res) if isinstance(res, dict) else {"result": res}
        res["_status"] = status
        res["_seconds"] = round(time.perf_counter() - t0, 2)
        results["benchmarks"][name] = res  # type: ignore[index]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.part"
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, out / "results.json")
    lines = [
        f"# simcompress benchmarks ({results['date']})",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, Python {results['machine']['python']}"  # type: ignore[index]
        + (" (quick mode)" if args.quick else ""),
        "",
        "| benchmark | quantity | value |",
        "|---|---|---|",
    ]
    for name, res in results["benchmarks"].items():  # type: ignore[union-attr]
        rows: list[tuple[str, str]] = []
        _flatten("", res, rows)
        for k, v in rows:
            lines.append(f"| {name} | {k} | {v} |")
    tmp = out / "results.md.part"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "results.md")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
