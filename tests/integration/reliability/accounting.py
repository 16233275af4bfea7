"""Exactly-once accounting for the reliability tests and scripts/soak.

Every sluice-acct-client reports what it launched and what its device log shows ran (each launch
appends its own sequence number); the fake driver (SLUICE_FAKE_REPORT) and the shim
(SLUICE_STATS_FILE) report at exit what they saw. `check` compares the three: every launch the
program made was submitted by the shim to the driver exactly once and either ran exactly once or
failed with an error; nothing is lost, nothing duplicated. Standard library only."""

import json
import os


class AccountingError(AssertionError):
    pass


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def client_files(work, tag):
    """Paths of one client's result, fake driver report and shim statistics."""
    return {"out": os.path.join(work, f"{tag}.result.json"),
            "fake": os.path.join(work, f"{tag}.fake.json"),
            "shim": os.path.join(work, f"{tag}.shim.json")}


def client_env(files):
    return {"SLUICE_FAKE_REPORT": files["fake"], "SLUICE_STATS_FILE": files["shim"]}


def account(files):
    """One finished client's figures; raises AccountingError naming what does not add up."""
    result, fake, shim = load_json(files["out"]), load_json(files["fake"]), load_json(files["shim"])
    if result is None:
        raise AccountingError(f"{files['out']}: no result (the client did not finish)")
    problems = []
    for field in ("lost", "duplicated", "out_of_order", "foreign"):
        if result.get(field, 0) != 0:
            problems.append(f"{field} {result[field]}")
    launched = result["launched"]
    failed_calls = result.get("failed_calls", 0)
    if fake is None:
        problems.append("no fake driver report")
    else:
        # The driver saw each launch the program made exactly once (a call the driver refused
        # counts as submitted and failed), and each one finished: ran or failed.
        if fake["launches_submitted"] != launched + failed_calls:
            problems.append(f"driver saw {fake['launches_submitted']} launches, the program made {launched + failed_calls}")
        if fake["launches_submitted"] != fake["launches_executed"] + fake["launches_failed"]:
            problems.append(f"driver: {fake['launches_submitted']} submitted != {fake['launches_executed']} executed + "
                            f"{fake['launches_failed']} failed")
    if shim is None:
        problems.append("no shim statistics")
    elif shim["launches"] != launched + failed_calls:
        problems.append(f"shim counted {shim['launches']} launches (inline + held), the program made {launched + failed_calls}")
    if problems:
        raise AccountingError(f"pid {result.get('pid')} ({result.get('role')}): " + "; ".join(problems))
    executed = fake["launches_executed"]
    # The shim's own time in launch calls: less the thread's run-queue wait and its time in the
    # driver below the shim; the raw figure where the client could not tell.
    own = result.get("launch_call_own_us", result["launch_call_us"])
    return {"role": result["role"], "pid": result["pid"], "launched": launched, "executed": executed,
            "failed": fake["launches_failed"] + failed_calls, "lost": result["lost"],
            "duplicated": result["duplicated"], "held": shim.get("held", 0), "inline": shim.get("inline", 0),
            "forced_releases": shim.get("forced_releases", 0),
            "launch_call_max_us": result["launch_call_us"].get("max", 0),
            "launch_call_own_max_us": own.get("max", 0), "launch_call_own_p99_us": own.get("p99", 0),
            "slowest_own_call": result.get("slowest_own_call"),
            "waited": shim.get("waited", 0),
            "latency_max_us": result["latency_us"].get("max", 0), "seconds": result["seconds"]}


def check(all_files):
    """Accounts for every client; returns the totals or raises AccountingError with every problem."""
    totals = {"clients": 0, "launched": 0, "executed": 0, "failed": 0, "lost": 0, "duplicated": 0, "held": 0}
    errors, per_client = [], []
    for files in all_files:
        try:
            figures = account(files)
        except AccountingError as error:
            errors.append(str(error))
            continue
        per_client.append(figures)
        totals["clients"] += 1
        for key in ("launched", "executed", "failed", "lost", "duplicated", "held"):
            totals[key] += figures[key]
    if errors:
        raise AccountingError("accounting failed:\n  " + "\n  ".join(errors))
    totals["per_client"] = per_client
    return totals
