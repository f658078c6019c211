#!/usr/bin/env bash
# Lays out the image's root filesystem in ROOTFS for the polykms binary BIN:
#
#   VERSION=… REVISION=… SOURCE_URL=… LICENSE=… CREATED_EPOCH=… \
#     bash deploy/image/rootfs.sh BIN ROOTFS
#
# Used by deploy/image/build.sh (buildah, no daemon) and by deploy/Dockerfile (docker build),
# so both images hold the same files: the binary, the shared libraries and loader it links
# against (ldd), CA certificates, /etc/passwd and /etc/group with 65532 ("nonroot"),
# /etc/nsswitch.conf, /tmp (1777), /home/nonroot, /etc/polykms (the config mount point) and
# the CycloneDX SBOM at /usr/share/doc/polykms/sbom.cdx.json. Needs ldd, objcopy, python3.
set -euo pipefail
bin="$1"
rootfs="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${VERSION:?}" "${REVISION:?}" "${SOURCE_URL:?}" "${LICENSE:?}" "${CREATED_EPOCH:?}"
mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,etc/polykms,tmp,home/nonroot,usr/share/doc/polykms}
install -m 0755 "$bin" "$rootfs/usr/local/bin/polykms"

# Every library the dynamic loader resolves, and the loader itself, at the paths the binary
# names (symlinks followed: the file lands under the name the loader looks for).
libs="$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)"
for lib in $libs; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
# Debian's loader path is /lib64 -> usr/lib64 and /lib -> usr/lib (merged /usr): keep the
# symlinks so that both spellings work, as on the build host.
for d in lib lib64; do
  if [[ -L "/$d" && -d "$rootfs/$d" && ! -L "$rootfs/$d" ]]; then
    target="$(readlink "/$d")"
    mkdir -p "$rootfs/$target"
    cp -a "$rootfs/$d/." "$rootfs/$target/"
    rm -rf "${rootfs:?}/$d"
    ln -s "$target" "$rootfs/$d"
  fi
done

cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"

# The SBOM, from the dependency list embedded in the binary.
python3 "$here/sbom.py" "$bin" --version "$VERSION" --revision "$REVISION" \
  --source "$SOURCE_URL" --license "$LICENSE" --created "$CREATED_EPOCH" \
  > "$rootfs/usr/share/doc/polykms/sbom.cdx.json"

chmod 0755 "$rootfs" "$rootfs"/{usr,usr/local,usr/local/bin,etc,etc/ssl,etc/ssl/certs,etc/polykms,usr/share,usr/share/doc,usr/share/doc/polykms}
chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf} "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/home/nonroot"
chown -R 0:0 "$rootfs"
chown 65532:65532 "$rootfs/home/nonroot"
# Reproducible file times: the commit's time.
find "$rootfs" -exec touch -h -d "@$CREATED_EPOCH" {} +

