#!/usr/bin/env bash
# Builds the polykms container image without a container daemon and without pulling a base
# image, and writes it as an OCI archive:
#
#   bash deploy/image/build.sh OUT.tar
#   bash deploy/image/build.sh --fips OUT.tar   # the FIPS 140-3 build (docs/fips.md)
#
# The image is `FROM scratch` plus exactly what the release binary needs at run time: the
# binary, the shared libraries and the loader it links against (found with ldd), the CA
# certificates, /etc/passwd and /etc/group entries for 65532 ("nonroot", as distroless),
# /etc/nsswitch.conf and /tmp. It runs as 65532:65532 with the entrypoint and cmd of
# deploy/Dockerfile, which builds the same layout for those who have a registry and a daemon.
#
# Tools: Debian's buildah with the vfs storage driver (root, no daemon, no overlay mounts),
# installed here when missing. The SBOM: cargo-auditable embeds the dependency list (crate,
# version, source) in the binary's `.dep-v0` section, and this script writes it out as
# /usr/share/doc/polykms/sbom.cdx.json in the image and OUT.sbom.cdx.json beside OUT.tar
# (CycloneDX 1.5, from the embedded data, so the file and the binary cannot disagree).
#
# --fips builds `--features fips`: every cryptographic operation and TLS connection on the AWS-LC
# FIPS module (Go, CMake and Perl build it; installed here from Debian when missing). The
# binary must say at build time that its module is in FIPS mode, the image is named
# polykms:VERSION-fips and labelled io.polykms.fips=true.
#
# Environment:
#   POLYKMS_IMAGE_PROFILE  cargo profile (default: release, the profile that ships)
#   POLYKMS_IMAGE_NAME     image name recorded in the archive (default: polykms:VERSION)
#   POLYKMS_GIT_REVISION   revision to record (default: git rev-parse HEAD, else "unknown")
#   POLYKMS_TOOLS_ROOT     where cargo-auditable is installed (default ~/.cache/polykms/tools)
set -euo pipefail

fips=0
if [[ "${1:-}" == "--fips" ]]; then
  fips=1
  shift
fi
if [[ $# -ne 1 || -z "$1" || "$1" == -* ]]; then
  echo "usage: bash deploy/image/build.sh [--fips] OUT.tar" >&2
  exit 64
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(realpath -m "$1")"
mkdir -p "$(dirname "$out")"
profile="${POLYKMS_IMAGE_PROFILE:-release}"
cd "$root"
log() { echo "build.sh: $*" >&2; }

# --- tools --------------------------------------------------------------------------------
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v python3 >/dev/null || missing+=(python3)
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((fips)); then
  # The AWS-LC FIPS module's build (aws-lc-fips-sys): Go, CMake, Perl.
  command -v go >/dev/null || missing+=(golang-go)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v perl >/dev/null || missing+=(perl)
fi
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# cargo-auditable, pinned, into POLYKMS_TOOLS_ROOT like cargo-deny (integration/supply-chain.sh):
# ~2 min to build from source on 2 cores, once per machine that keeps the directory.
auditable_version=0.7.7
tools="${POLYKMS_TOOLS_ROOT:-$HOME/.cache/polykms/tools}"
export PATH="$tools/bin:$PATH"
# Trust only an executable in $tools whose install record names the pinned version: an install
# record alone (e.g. ~/.cargo/.crates.toml after the binary went away) is not a tool.
if ! [[ -x "$tools/bin/cargo-auditable" ]] \
    || ! cargo install --list --root "$tools" 2>/dev/null \
      | grep -qx "cargo-auditable v$auditable_version:"; then
  log "installing cargo-auditable $auditable_version into $tools"
  started=$(date +%s)
  (cd / && CARGO_TARGET_DIR="${POLYKMS_TOOLS_TARGET:-$tools/target}" \
    cargo install --locked --force --quiet --version "$auditable_version" --root "$tools" \
      cargo-auditable)
  log "cargo-auditable installed in $(($(date +%s) - started)) s"
fi

# --- the binary ---------------------------------------------------------------------------
version="$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version *=/{print $2; exit}' Cargo.toml)"
revision="${POLYKMS_GIT_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
created_epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
source_url="$(awk -F'"' '/^repository *=/{print $2; exit}' Cargo.toml)"
license="$(awk -F'"' '/^license *=/{print $2; exit}' Cargo.toml)"
features=()
tag="$version"
if ((fips)); then
  features=(--features fips)
  tag="$version-fips"
fi
name="${POLYKMS_IMAGE_NAME:-polykms:$tag}"
export POLYKMS_GIT_REVISION="$revision"

log "cargo auditable build --profile $profile -p polykms ${features[*]} (version $version, revision $revision)"
bin="$(cargo auditable build --locked --profile "$profile" -p polykms --bin polykms "${features[@]}" \
        --message-format=json-render-diagnostics \
  | python3 -c 'import json,sys
exe=[m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable")]
print(exe[-1])')"
"$bin" version | grep -q "$revision" || { log "$bin does not report revision $revision"; exit 1; }
if ((fips)); then
  # The module's power-on self tests and integrity check run when the binary starts.
  "$bin" version | grep -q '^cryptographic module: AWS-LC FIPS .*(FIPS mode)' \
    || { log "$bin does not report the AWS-LC FIPS module in FIPS mode:"; "$bin" version >&2; exit 1; }
  log "$("$bin" version | grep '^cryptographic module')"
fi

# --- the root filesystem ------------------------------------------------------------------
stage="$(mktemp -d /tmp/polykms-image.XXXXXX)"
container=""
cleanup() {
  [[ -n "$container" ]] && buildah --storage-driver vfs rm "$container" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup EXIT
rootfs="$stage/rootfs"
VERSION="$version" REVISION="$revision" SOURCE_URL="$source_url" LICENSE="$license" \
  CREATED_EPOCH="$created_epoch" bash "$root/deploy/image/rootfs.sh" "$bin" "$rootfs"
cp "$rootfs/usr/share/doc/polykms/sbom.cdx.json" "${out%.tar}.sbom.cdx.json"

# --- the image ----------------------------------------------------------------------------
bh() { buildah --storage-driver vfs "$@"; }
container="$(bh from --quiet scratch)"
mnt="$(bh mount "$container")"
# tar keeps modes, owners and times.
tar -C "$rootfs" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
bh umount "$container" >/dev/null
created="$(date -u -d "@$created_epoch" +%Y-%m-%dT%H:%M:%SZ)"
bh config \
  --user 65532:65532 \
  --workingdir / \
  --env PATH=/usr/local/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --port 8095 \
  --entrypoint '["/usr/local/bin/polykms"]' \
  --cmd '["serve", "--config", "/etc/polykms/config.toml", "--log-format", "json"]' \
  --label org.opencontainers.image.title=polykms \
  --label "org.opencontainers.image.description=Kubernetes KMS v2 plugin for every key store" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=$source_url" \
  --label "org.opencontainers.image.licenses=$license" \
  --label "org.opencontainers.image.created=$created" \
  --label org.opencontainers.image.base.name=scratch \
  --label "io.polykms.fips=$( ((fips)) && echo true || echo false)" \
  --created-by "deploy/image/build.sh" \
  --os linux --arch "$(dpkg --print-architecture 2>/dev/null || uname -m)" \
  "$container"
rm -f "$out"
bh commit --quiet --format oci --disable-compression=false --timestamp "$created_epoch" --rm "$container" \
  "oci-archive:$out:$name" >/dev/null
container=""

size="$(stat -c %s "$out")"
unpacked="$(du -sb "$rootfs" | cut -f1)"
echo "image: $out ($name, revision $revision)"
echo "image size: $(numfmt --to=iec-i --suffix=B "$size") archive, $(numfmt --to=iec-i --suffix=B "$unpacked") unpacked ($size / $unpacked bytes)"
echo "sbom: ${out%.tar}.sbom.cdx.json ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]))' "${out%.tar}.sbom.cdx.json") components; also /usr/share/doc/polykms/sbom.cdx.json in the image)"
