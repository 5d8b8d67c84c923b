"""bench/session.py: reading a benchmark session's JSON lines (shared by the
*_summarize.py scripts).

A "noise" line (written by bench/lib.sh after each measurement) says how many
CPU seconds processes outside the benchmark used meanwhile; the measurements
before it that it covers are marked _noise, and _disturbed when that exceeds
10% of the measurement's wall time (they are left out of the medians)."""
import json


def load(path):
    """Returns (lines, machine, disturbed_noise_lines)."""
    lines = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
    machine = next((l for l in lines if l.get("kind") == "machine"), {})
    pending, disturbed = [], []
    for l in lines:
        if l.get("kind") == "noise":
            bad = l["others_cpu_s"] > 0.1 * max(l["secs"], 0.1)
            for r in pending:
                r["_noise"] = l
                if bad:
                    r["_disturbed"] = True
            if bad:
                disturbed.append(l)
            pending = []
        elif l.get("kind") != "machine":
            pending.append(l)
    return lines, machine, disturbed
