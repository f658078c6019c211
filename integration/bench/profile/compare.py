"""Prints where the plugin's CPU samples exceed the floor's, grouped by crate (user space) or
symbol (kernel, libc), in milliseconds of CPU, from two `perf record` files (profile/run.sh)."""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)")
EVENTS = re.compile(r"Event count \(approx\.\): (\d+)")


def load(path):
    """Milliseconds of samples per group, and the total."""
    report = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True,
    ).stdout
    events = EVENTS.search(report)
    total_ms = int(events.group(1)) / 1e6 if events else 0.0  # cpu-clock counts ns
    groups = collections.Counter()
    for line in report.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, _, sym = m.groups()
        if dso.startswith("[kernel"):
            key = "kernel: " + sym.split()[0][:50]
        elif dso.startswith("lib"):
            key = "libc: " + sym.split()[0][:50]
        else:
            crate = re.split(r"::|<| as ", sym.lstrip("<"))[0]
            key = f"{crate}: {sym[:70]}" if crate in ("core", "alloc", "std") else crate
        groups[key] += float(pct) / 100 * total_ms
    return groups, total_ms


def main():
    prefix = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    floor, floor_ms = load(f"{prefix}.floor.data")
    plugin, plugin_ms = load(f"{prefix}.plugin.data")
    print(f"CPU sampled: floor {floor_ms:.0f} ms, plugin {plugin_ms:.0f} ms")
    print(f"{'plugin-floor':>12} {'floor':>8} {'plugin':>8}  group")
    for key in sorted(set(floor) | set(plugin), key=lambda k: floor[k] - plugin[k])[:rows]:
        print(f"{plugin[key] - floor[key]:12.0f} {floor[key]:8.0f} {plugin[key]:8.0f}  {key}")


if __name__ == "__main__":
    main()
