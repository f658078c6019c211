"""What the plugin says of its keys' lifecycle, read from outside: the polykms_key_lifecycle
and deletion-timestamp metrics, and the WARN records of its JSON log. Shared by the
test_lifecycle_* files (one per pair of backends)."""

import json
import re
import time

# plugin_config probes every 500 ms while healthy.
PROBE_INTERVAL = 0.5


def lifecycle_metrics(p, backend):
    """{state: value} of polykms_key_lifecycle for `backend`, and its deletion timestamp."""
    states, deletion = {}, None
    for line in p.http("/metrics")[1].splitlines():
        if f'backend="{backend}"' not in line:
            continue
        m = re.match(r'polykms_key_lifecycle\{.*state="([a-z_]+)".*\} (\S+)$', line)
        if m:
            states[m.group(1)] = float(m.group(2))
        m = re.match(r"polykms_key_deletion_timestamp_seconds\{.*\} (\S+)$", line)
        if m:
            deletion = float(m.group(1))
    return states, deletion


def on(p, backend):
    """The lifecycle states set for `backend` (`ok` when there is nothing to say)."""
    return {s for s, v in lifecycle_metrics(p, backend)[0].items() if v == 1}


def warn_records(p, text):
    """WARN log records that name `text` in their message or a field (a finding that turns the
    backend unhealthy is logged once, as the reason of the 'backend unhealthy' record)."""
    out = []
    for line in p.logs().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("level") == "WARN" and any(text in str(v) for v in rec.values()):
            out.append(rec)
    return out


def settle(probes):
    """Lets `probes` more probes run."""
    time.sleep(PROBE_INTERVAL * probes)
