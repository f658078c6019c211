#!/usr/bin/env bash
# Re-encrypts API objects under the KMS plugin's current key: every object is read and written
# back unchanged (`kubectl get -o json | kubectl replace -f -`), so the apiserver stores it with
# its current DEK and key_id. Objects already under the current key_id are a no-op for the
# apiserver (it only writes values it reads as stale).
#
# Safe for real clusters:
#   - namespaced batches (--batch-size objects per get/replace round trip);
#   - --dry-run prints the plan and writes nothing;
#   - resumable: each object done is appended to a state file; a rerun skips them
#     (delete the state file, or pass a new --state, to start over);
#   - conflicts ("the object has been modified") and transient errors are retried per object
#     with a fresh read, --retries times with backoff; objects deleted meanwhile are skipped.
#
# Usage:
#   deploy/scripts/reencrypt.sh [--resource secrets] [--namespace NS]... [--batch-size 50]
#                               [--state FILE] [--retries 5] [--context CTX] [--dry-run]
# Then prove it: polykms audit --etcd-endpoints ... --expect-key-id <new key_id>
set -euo pipefail

resource="secrets"
batch_size=50
retries=5
state=""
dry_run=0
namespaces=()
kubectl_args=()

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

die() { echo "reencrypt.sh: $*" >&2; exit 64; }

while (($#)); do
  case "$1" in
    --resource) resource="${2:?--resource needs a value}"; shift 2 ;;
    --namespace | -n) namespaces+=("${2:?--namespace needs a value}"); shift 2 ;;
    --batch-size) batch_size="${2:?--batch-size needs a value}"; shift 2 ;;
    --retries) retries="${2:?--retries needs a value}"; shift 2 ;;
    --state) state="${2:?--state needs a value}"; shift 2 ;;
    --context) kubectl_args+=(--context "${2:?--context needs a value}"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ "$batch_size" =~ ^[1-9][0-9]*$ ]] || die "--batch-size must be a positive integer"
[[ "$retries" =~ ^[0-9]+$ ]] || die "--retries must be a non-negative integer"
[[ "$resource" =~ ^[a-z0-9.-]+$ ]] || die "--resource must be a resource name like secrets"
command -v kubectl >/dev/null 2>&1 || die "kubectl not found in PATH"
state="${state:-reencrypt-${resource}.state}"

k() { kubectl "${kubectl_args[@]}" "$@"; }

declare -A done_set=()
if [[ -f "$state" ]]; then
  while IFS= read -r line; do
    done_set["$line"]=1
  done <"$state"
  echo "reencrypt.sh: resuming: ${#done_set[@]} object(s) already done per $state" >&2
fi

mark_done() { # namespace name
  printf '%s/%s/%s\n' "$resource" "$1" "$2" >>"$state"
  done_set["$resource/$1/$2"]=1
}

# Retries one object with a fresh read each time; 0 done (or gone), 1 gave up.
replace_one() { # namespace name
  local ns="$1" name="$2" attempt=0 out
  while :; do
    if out="$(k get "$resource" "$name" -n "$ns" -o json 2>&1 | k replace -f - -o name 2>&1)"; then
      mark_done "$ns" "$name"
      return 0
    fi
    if grep -q 'NotFound\|not found' <<<"$out"; then
      echo "reencrypt.sh: $ns/$name was deleted meanwhile; skipping" >&2
      mark_done "$ns" "$name"
      return 0
    fi
    attempt=$((attempt + 1))
    if ((attempt > retries)); then
      echo "reencrypt.sh: $ns/$name failed after $retries retries: $out" >&2
      return 1
    fi
    sleep "$((attempt < 5 ? attempt : 5))"
  done
}

# One batch: a single get + replace; the objects that did not come back as replaced (a
# conflict, a webhook hiccup) are redone one by one. Sets batch_failed.
batch_failed=0
replace_batch() { # namespace name...
  local ns="$1" out name
  batch_failed=0
  shift
  out="$(k get "$resource" -n "$ns" -o json "$@" 2>/dev/null | k replace -f - -o name 2>/dev/null)" || true
  declare -A replaced=()
  while IFS= read -r line; do
    [[ -n "$line" ]] && replaced["${line##*/}"]=1
  done <<<"$out"
  for name in "$@"; do
    if [[ -n "${replaced[$name]:-}" ]]; then
      mark_done "$ns" "$name"
    else
      replace_one "$ns" "$name" || batch_failed=$((batch_failed + 1))
    fi
  done
}

if ((${#namespaces[@]} == 0)); then
  mapfile -t namespaces < <(k get namespaces -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
fi

total_done=0 total_failed=0 total_skipped=0
for ns in "${namespaces[@]}"; do
  mapfile -t names < <(k get "$resource" -n "$ns" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  todo=()
  for name in "${names[@]}"; do
    [[ -z "$name" ]] && continue
    if [[ -n "${done_set[$resource/$ns/$name]:-}" ]]; then
      total_skipped=$((total_skipped + 1))
    else
      todo+=("$name")
    fi
  done
  if ((dry_run)); then
    echo "would re-encrypt ${#todo[@]} $resource in $ns ($(((${#todo[@]} + batch_size - 1) / batch_size)) batch(es))"
    continue
  fi
  for ((i = 0; i < ${#todo[@]}; i += batch_size)); do
    batch=("${todo[@]:i:batch_size}")
    replace_batch "$ns" "${batch[@]}"
    total_failed=$((total_failed + batch_failed))
    total_done=$((total_done + ${#batch[@]} - batch_failed))
    echo "$ns: $((i + ${#batch[@]}))/${#todo[@]} $resource processed" >&2
  done
done

if ((dry_run)); then
  echo "dry run: nothing written; $total_skipped object(s) already done per $state"
  exit 0
fi
echo "re-encrypted $total_done $resource, $total_skipped already done, $total_failed failed (state: $state)"
((total_failed == 0)) || exit 1
