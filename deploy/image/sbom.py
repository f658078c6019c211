#!/usr/bin/env python3
"""Writes a CycloneDX 1.5 SBOM (JSON, stdout) for a binary built with `cargo auditable`.

The dependency list comes from the binary itself: cargo-auditable stores every crate compiled
into it (name, version, source, runtime or build-time, dependency edges) as zlib-compressed
JSON in its `.dep-v0` ELF section. Licenses come from `cargo metadata` of the same checkout.
Usage: sbom.py BINARY --version V --revision R --source URL --license SPDX --created EPOCH
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
import zlib
from datetime import datetime, timezone


def embedded_dependencies(binary):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "dep-v0")
        # --dump-section writes the section's bytes (it is not loaded at run time, so
        # `-O binary` would skip it); the rewritten copy of the binary is thrown away.
        r = subprocess.run(["objcopy", f"--dump-section=.dep-v0={out}", binary, os.path.join(d, "copy")],
                           capture_output=True, text=True)
        raw = open(out, "rb").read() if r.returncode == 0 and os.path.exists(out) else b""
    if not raw:
        sys.exit(f"sbom.py: {binary} has no .dep-v0 section: build it with `cargo auditable build`")
    return json.loads(zlib.decompress(raw))["packages"]


def licenses():
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"],
                                     check=True, capture_output=True).stdout)
    return {(p["name"], p["version"]): p.get("license") for p in meta["packages"]}


def purl(p):
    return f"pkg:cargo/{p['name']}@{p['version']}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    for flag in ("--version", "--revision", "--source", "--license", "--created"):
        ap.add_argument(flag, required=True)
    a = ap.parse_args()
    packages = embedded_dependencies(a.binary)
    lic = licenses()
    refs = [purl(p) for p in packages]
    root = next(i for i, p in enumerate(packages) if p.get("root"))
    components = []
    for i, p in enumerate(packages):
        if i == root:
            continue
        c = {
            "type": "library",
            "bom-ref": refs[i],
            "name": p["name"],
            "version": p["version"],
            "purl": refs[i],
            # Build-time crates (build scripts, proc macros) are not in the binary.
            "scope": "excluded" if p.get("kind") == "build" else "required",
        }
        if p.get("source") and p["source"] != "crates.io":
            c["properties"] = [{"name": "cargo:source", "value": p["source"]}]
        if lic.get((p["name"], p["version"])):
            c["licenses"] = [{"expression": lic[(p["name"], p["version"])]}]
        components.append(c)
    created = datetime.fromtimestamp(int(a.created), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # The same build gives the same serial number.
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{a.source}@{a.revision}')}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "cargo-auditable"},
                                     {"type": "application", "name": "deploy/image/sbom.py"}]},
            "component": {
                "type": "application",
                "bom-ref": refs[root],
                "name": packages[root]["name"],
                "version": a.version,
                "purl": refs[root],
                "licenses": [{"expression": a.license}],
                "externalReferences": [{"type": "vcs", "url": a.source}],
                "properties": [{"name": "git:revision", "value": a.revision}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": refs[i], "dependsOn": sorted({refs[d] for d in p.get("dependencies", [])})}
            for i, p in enumerate(packages)
        ],
    }
    json.dump(bom, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
