#!/usr/bin/env bash
# Kept for old runbooks: re-encryption is `polykms reencrypt` now (paged, resumable with
# --state-file, progress, RBAC-aware; see docs/rotation.md and `polykms reencrypt --help`).
exec "${POLYKMS:-polykms}" reencrypt "$@"
