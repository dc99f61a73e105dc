#!/usr/bin/env python3
"""Summarise hack/bench samples: medians, and imgvol's ratio to each peer.

  benchreport.py SAMPLES.tsv META.json [--json OUT]

SAMPLES.tsv lines: section, image, metric, contender, run, value, unit
(tab-separated; value "FAIL" for a failed run). Units: "s" (seconds, lower is
better) or "MiB" (memory). For every (section, image, metric) the median of
each contender is printed with, for the peers, the ratio imgvol / peer
(below 1.00 means imgvol took less). A throughput column is added where the
section declares the bytes moved (META.json "bytes": {"section/image": n}).
"""

import json
import statistics
import sys
from collections import OrderedDict


def main():
    args = sys.argv[1:]
    out_json = None
    if "--json" in args:
        i = args.index("--json")
        out_json = args[i + 1]
        del args[i:i + 2]
    samples_path, meta_path = args
    with open(meta_path) as f:
        meta = json.load(f)
    groups = OrderedDict()
    with open(samples_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            section, image, metric, contender, run, value, unit = line.split("\t")
            g = groups.setdefault((section, image, metric), OrderedDict())
            c = g.setdefault(contender, {"unit": unit, "values": [], "failed": 0})
            if c["unit"] == "-":
                c["unit"] = unit
            if value == "FAIL":
                c["failed"] += 1
            else:
                c["values"].append(float(value))

    rows, results = [], []
    byte_counts = meta.get("bytes", {})
    order = {s: i for i, s in enumerate(["pull", "read", "stat", "ttfb", "rss"])}
    keys = sorted(groups, key=lambda k: order.get(k[0], len(order)))  # stable
    for key in keys:
        (section, image, metric), contenders = key, groups[key]
        ref = contenders.get("imgvol")
        ref_med = statistics.median(ref["values"]) if ref and ref["values"] else None
        nbytes = byte_counts.get(section + "/" + image)
        for name, c in contenders.items():
            med = statistics.median(c["values"]) if c["values"] else None
            ratio = None
            if name != "imgvol" and ref_med is not None and med:
                ratio = ref_med / med
            rate = None
            if nbytes and med and c["unit"] == "s":
                rate = nbytes / med / (1 << 20)
            results.append({"section": section, "image": image, "metric": metric,
                            "contender": name, "unit": c["unit"], "median": med,
                            "samples": c["values"], "failed": c["failed"],
                            "imgvol_over_this": ratio,
                            "MiB_per_s": rate})
            rows.append([section, image, metric, name,
                         "FAIL" if med is None else ("%.3f" % med if c["unit"] == "s" else "%.1f" % med),
                         c["unit"],
                         "%d%s" % (len(c["values"]), ("+%dF" % c["failed"]) if c["failed"] else ""),
                         "" if ratio is None else "%.2f" % ratio,
                         "" if rate is None else "%.0f" % rate])

    head = ["SECTION", "IMAGE", "METRIC", "CONTENDER", "MEDIAN", "UNIT", "N", "IMGVOL/THIS", "MiB/s"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    right = {4, 6, 7, 8}

    def fmt(r):
        return "  ".join(str(v).rjust(widths[i]) if i in right else str(v).ljust(widths[i])
                         for i, v in enumerate(r)).rstrip()

    print(fmt(head))
    print(fmt(["-" * w for w in widths]))
    prev = None
    for r in rows:
        key = tuple(r[:3])
        if prev is not None and key[:2] != prev[:2]:
            print()
        prev = key
        print(fmt(r))
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
