#!/usr/bin/env bash
# Regenerates crates/polykms/startup.ld, the linker script that keeps the code `polykms serve`
# runs together (README, "Idle RSS"):
#
#   bash tools/startup-order.sh
#
# 1. builds the release binary as shipped (same command and profile, so the same symbol hashes;
#    ~5 min of fat LTO) but without startup.ld (POLYKMS_STARTUP_ORDER=off) and with a link map
#    (POLYKMS_LINK_MAP), which names the functions of the stripped binary;
# 2. runs `serve` on configs/local.toml (temp socket and port) under valgrind's callgrind:
#    start and 10 s idle, then Status/Encrypt/Decrypt calls and /metrics, /healthz, then
#    SIGTERM; the functions of phase 1 go first, those only phase 2 ran after them;
# 3. writes one input-section pattern per function into crates/polykms/startup.ld. Patterns
#    leave out the symbol hash (`17h…E`, v0 crate disambiguators) so that a dependency bump or
#    a new toolchain keeps them matching; a generic whose hash-free name would also pull in
#    other instances (e.g. `<&T as Debug>::fmt`) is listed with its exact name, which stops
#    matching when hashes change (measured: idle RSS 8.2 instead of 5.5 MiB with none of them).
#
# Needs valgrind and the integration venv (integration/lib/venv.sh, for the gRPC client).
# CARGO_TARGET_DIR is honoured. Rerun after large changes to the startup or request path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v valgrind >/dev/null || { echo "startup-order.sh: needs valgrind" >&2; exit 1; }
venv="$(bash integration/lib/venv.sh)"
work="$(mktemp -d /tmp/polykms-startup-order.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# A fixed path for the map: a second run reuses the build.
map="$(realpath -m "${CARGO_TARGET_DIR:-target}")/startup-order.map"
bin="$(POLYKMS_STARTUP_ORDER=off POLYKMS_LINK_MAP="$map" \
  cargo build --release -p polykms --bin polykms --message-format=json-render-diagnostics \
  | python3 -c 'import json,sys
exe=[m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable")]
print(exe[-1])')"
cp "$bin" "$work/polykms"
cp "$map" "$work/polykms.map"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sed -e "s#^socket = .*#socket = \"$work/polykms.sock\"#" -e "s#^listen = .*#listen = \"127.0.0.1:$port\"#" \
  -e "s#^key_files = .*#key_files = [\"$work/current.key\"]#" configs/local.toml >"$work/config.toml"
valgrind --tool=callgrind --dump-instr=yes --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$work/cg.out" "$work/polykms" serve --config "$work/config.toml" \
  >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do [[ -S "$work/polykms.sock" ]] && break; sleep 0.1; done
sleep 10
callgrind_control -d "$pid" >/dev/null   # phase 1 → cg.out.1
"$venv/bin/python" - "$work/polykms.sock" "$port" <<'EOF'
import os, sys, tempfile, urllib.request
from pathlib import Path
import grpc
from grpc_tools import protoc
proto = Path("proto")
out = Path(tempfile.mkdtemp(prefix="polykms-stubs-"))
assert protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}", str(proto / "kms/v2/api.proto")]) == 0
for d in (out / "kms", out / "kms" / "v2"):
    (d / "__init__.py").touch()
sys.path.insert(0, str(out))
from kms.v2 import api_pb2 as pb, api_pb2_grpc as g
stub = g.KeyManagementServiceStub(grpc.insecure_channel(f"unix://{sys.argv[1]}"))
for i in range(20):
    stub.Status(pb.StatusRequest())
    e = stub.Encrypt(pb.EncryptRequest(uid=f"e{i}", plaintext=os.urandom(32)))
    stub.Decrypt(pb.DecryptRequest(uid=f"d{i}", ciphertext=e.ciphertext, key_id=e.key_id, annotations=e.annotations))
for path in ("/metrics", "/healthz", "/livez", "/readyz"):
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[2]}{path}", timeout=30).read()
EOF
kill -TERM "$pid"
wait "$pid" || { cat "$work/serve.log" >&2; exit 1; }

python3 - "$work" crates/polykms/startup.ld <<'EOF'
import bisect, collections, re, sys
work, out = sys.argv[1], sys.argv[2]

# The link map: every function's input section (`.text.NAME`, `.text.unlikely.NAME`).
sections = []
for line in open(f"{work}/polykms.map"):
    m = re.match(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S.*:\(\.text\.(?:unlikely\.)?([A-Za-z0-9_.$]+)\)$", line)
    if m:
        sections.append((int(m[1], 16), int(m[2], 16), m[3]))
sections.sort()
starts = [a for a, _, _ in sections]

def functions(path):
    """The functions of the binary with an instruction executed, in order of appearance.

    Every cost line (--dump-instr=yes) starts with an instruction address (relative to the
    object, as in the link map): the functions entered by a jump (tail calls), which callgrind
    does not name in a stripped binary, are found too."""
    ob, seen = None, {}
    for line in open(path):
        if line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("0x") and ob == f"{work}/polykms":
            addr = int(line.split()[0], 16)
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < sections[i][0] + sections[i][1]:
                seen[sections[i][2]] = None
    return list(seen)

def hash_free(name):
    if name.startswith("_ZN"):
        return re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    if name.startswith("_R"):
        name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)
        return re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
    return name

size = {}
pattern_size = collections.Counter()
for _, s, name in sections:
    size[name] = s
    pattern_size[hash_free(name)] += s

start = functions(f"{work}/cg.out.1")
used = start + [f for f in functions(f"{work}/cg.out") if f not in set(start)]
by_pattern = collections.defaultdict(list)
for f in used:
    by_pattern[hash_free(f)].append(f)
patterns, done, total = [], set(), 0
for f in used:
    p = hash_free(f)
    if p in done:
        continue
    done.add(p)
    own = sum(size.get(g, 0) for g in by_pattern[p])
    if pattern_size[p] <= max(2 * own, own + 4096):
        patterns.append(p)
        total += pattern_size[p]
    else:
        patterns += by_pattern[p]
        total += own
with open(out, "w") as o:
    o.write(f"""/* Generated by tools/startup-order.sh: do not edit; rerun it.
 *
 * The functions `polykms serve` runs at start and idle ({len(start)}), then those a few requests
 * add, kept together at the start of the code instead of spread over the whole text: the
 * kernel maps 64 KiB around every code page touched, so scattered startup code costs idle RSS
 * (README, "Idle RSS"). Linked into release builds by crates/polykms/build.rs; a name that no
 * longer exists matches nothing and costs nothing. {len(patterns)} patterns, ~{total // 1024} KiB of code.
 */
SECTIONS {{
  .text.startup : {{
""")
    for p in patterns:
        o.write(f"    *(.text.{p} .text.unlikely.{p})\n")
    o.write("  }\n}\nINSERT BEFORE .text;\n")
print(f"startup-order.sh: {out}: {len(used)} functions, {len(patterns)} patterns, ~{total // 1024} KiB", file=sys.stderr)
EOF
