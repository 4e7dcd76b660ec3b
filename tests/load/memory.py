#!/usr/bin/env python3
"""Where a server process's RSS grew: per-mapping readings of /proc/PID/smaps before and after a load run.

  memory.py snap PID OUT.json [DEBUG_URL]    per-mapping RSS now, plus the JSON DEBUG_URL answers (the rails-chat
                                             example's /debug/memory: Ruby GC and malloc statistics)
  memory.py diff BEFORE.json AFTER.json N    the RSS delta by kind of mapping, in KiB and bytes per connection
                                             (N connections), and the Ruby-side readings when both have them

Kinds: the malloc arena that grew most (in a Ferrocable process, the tokio worker's: the core's connections),
the other malloc arenas (glibc gives threads their own; 64 MiB-aligned mappings), the main heap ([heap]), Ruby's
transient heap (its 32 MiB mapping), thread stacks (2 MiB and 8 MiB mappings), other anonymous memory (Ruby's
object heap pages, large mallocs) and code or data of each file.
"""
import json
import re
import sys
import urllib.request

ARENA_ALIGN = 64 << 20
STACK_SIZES_KIB = {1024, 2048, 8192}
TRANSIENT_HEAP_KIB = 32768


def mappings(pid):
    out, current = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                fields = line.split()
                start, end = (int(x, 16) for x in fields[0].split("-"))
                current = {"start": start, "kib": (end - start) // 1024, "name": fields[5] if len(fields) > 5 else "",
                           "rss": 0}
                out.append(current)
            elif line.startswith("Rss:"):
                current["rss"] = int(line.split()[1])
    return out


def snap(pid, out_path, debug_url=None):
    reading = {"pid": pid, "mappings": mappings(pid)}
    if debug_url:
        with urllib.request.urlopen(debug_url, timeout=30) as response:
            reading["debug"] = json.load(response)
    with open(out_path, "w") as out:
        json.dump(reading, out)


def kind(mapping, largest_arena):
    name = mapping["name"]
    if name.startswith("["):
        return name
    if name:
        return "code/data: " + name.rsplit("/", 1)[-1]
    if mapping["start"] % ARENA_ALIGN == 0:
        return "largest malloc arena" if mapping["start"] == largest_arena else "other malloc arenas"
    if mapping["kib"] == TRANSIENT_HEAP_KIB:
        return "ruby transient heap"
    if mapping["kib"] in STACK_SIZES_KIB:
        return "thread stacks"
    return "other anonymous (ruby heap pages, large mallocs)"


def diff(before_path, after_path, connections):
    before, after = (json.load(open(p)) for p in (before_path, after_path))
    old = {m["start"]: m["rss"] for m in before["mappings"]}
    deltas = [(m, m["rss"] - old.get(m["start"], 0)) for m in after["mappings"]]
    gone = sum(rss for start, rss in old.items() if start not in {m["start"] for m in after["mappings"]})
    arenas = [(d, m["start"]) for m, d in deltas if not m["name"] and m["start"] % ARENA_ALIGN == 0]
    largest = max(arenas)[1] if arenas else None
    by_kind = {}
    for mapping, delta in deltas:
        key = kind(mapping, largest)
        by_kind[key] = by_kind.get(key, 0) + delta
    total = sum(by_kind.values()) - gone
    per = 1024 / connections
    print(f"| part of the RSS delta | KiB | bytes/conn |\n| --- | --- | --- |")
    for key, kib in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        if abs(kib) >= 64:
            print(f"| {key} | {kib:,} | {kib * per:,.0f} |")
    print(f"| **total** | **{total:,}** | **{total * per:,.0f}** |")
    if "debug" in before and "debug" in after:
        b, a = before["debug"], after["debug"]
        gc_b, gc_a = b["gc"], a["gc"]
        print()
        print(f"- Ruby: {(gc_a['total_allocated_objects'] - gc_b['total_allocated_objects']) / connections:,.0f} objects "
              f"allocated per connection, {gc_a['count'] - gc_b['count']} GCs ({gc_a['major_gc_count'] - gc_b['major_gc_count']} major), "
              f"heap pages {gc_b['heap_allocated_pages']} -> {gc_a['heap_allocated_pages']}, live slots "
              f"{gc_b['heap_live_slots']:,} -> {gc_a['heap_live_slots']:,}")
        mb, ma = b.get("mallinfo"), a.get("mallinfo")
        if mb and ma:
            print(f"- malloc (all arenas): in use {mb['uordblks'] // 1024:,} -> {ma['uordblks'] // 1024:,} KiB, "
                  f"free inside arenas {mb['fordblks'] // 1024:,} -> {ma['fordblks'] // 1024:,} KiB")
        if b.get("arenas") and a.get("arenas"):
            rows = []
            for index, (use, free, system) in enumerate(a["arenas"]):
                old = b["arenas"][index] if index < len(b["arenas"]) else [0, 0, 0]
                rows.append((system - old[2], use - old[0], free - old[1], index))
            grown = ", ".join(f"#{i}: +{s // 1024:,} KiB ({u // 1024:+,} in use, {f // 1024:+,} free)"
                              for s, u, f, i in sorted(rows, reverse=True)[:4] if s > 0)
            print(f"- arenas that grew most (malloc_info; #0 is the main heap): {grown}")
        print(f"- threads {b['native_threads']} -> {a['native_threads']}, database connections "
              f"{b['db_pool']['connections']} -> {a['db_pool']['connections']}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif len(sys.argv) == 5 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
