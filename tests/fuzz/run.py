"""Run the fuzz suite from the command line and print its counts.

    python tests/fuzz/run.py [--profile ci|long] [--seed N] [--workers N] [--kinds hdf5,image,...] [--json PATH]

Exit status 0 when every case ended ok or refused (see harness.py for the outcomes)."""
import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

import cases  # noqa: E402
import harness  # noqa: E402


def case_list(profile, kinds=None):
    counts = harness.PROFILES[profile]
    out, skipped = [], []
    for kind, n in counts.items():
        if kinds and kind not in kinds:
            continue
        if (kind == "safetensors" and not cases.safetensors_available()) or not cases.model_formats().get(kind, True):
            skipped.append(kind)
            continue
        out += [(kind, i) for i in range(n)]
    return out, skipped


def run(profile="ci", seed=0, workers=2, kinds=None, log=print):
    cases.prepare()
    todo, skipped = case_list(profile, kinds)
    start = time.monotonic()
    results = harness.run_cases(todo, cases.GENERATORS, seed, workers=workers,
                                log=lambda r: log(f"FAIL {r['kind']}#{r['index']} {r['label']}: {r['outcome']}: "
                                                  f"{r['detail'][:600]}"))
    return results, skipped, time.monotonic() - start


def report(results, skipped, seconds, print_fn=print):
    table = harness.summarize(results)
    outcomes = ["ok", "refused", "foreign", "signal", "hang", "leak", "left", "harness"]
    print_fn(f"{'kind':<12}{'cases':>7}" + "".join(f"{o:>9}" for o in outcomes))
    for kind, row in sorted(table.items()):
        print_fn(f"{kind:<12}{sum(row.values()):>7}" + "".join(f"{row.get(o, 0):>9}" for o in outcomes))
    total = {o: sum(row.get(o, 0) for row in table.values()) for o in outcomes}
    print_fn(f"{'all':<12}{len(results):>7}" + "".join(f"{total[o]:>9}" for o in outcomes))
    for kind in skipped:
        print_fn(f"{kind}: skipped (" + ("mobilenetv2/formats/safetensors.py is not in this tree; see cases.safetensors_available"
                                          if kind == "safetensors" else "its runtime is not installed") + ")")
    refusals = harness.refusal_classes(results)
    print_fn("refusals by class: " + ", ".join(f"{k} {v}" for k, v in sorted(refusals.items(), key=lambda kv: -kv[1])))
    print_fn(f"{seconds:.1f} s")
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(harness.PROFILES), default="ci")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kinds", default="")
    p.add_argument("--json")
    args = p.parse_args(argv)
    results, skipped, seconds = run(args.profile, args.seed, args.workers,
                                    [k for k in args.kinds.split(",") if k])
    total = report(results, skipped, seconds)
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "seed": args.seed, "seconds": seconds,
                                               "table": harness.summarize(results), "skipped": skipped,
                                               "failures": [r for r in results if r["outcome"] not in ("ok", "refused")]},
                                              indent=1))
    return 0 if total["ok"] + total["refused"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
