#!/usr/bin/env bash
# HTTP benchmarks: a hello-world HTTP/1.1 server on torsion-web (the example
# crates/torsion-web/examples/hello.rs), on hyper 1.x over a tokio current_thread
# runtime (bench/servers/hyper-hello) and on twisted.web with the epoll reactor
# (bench/servers/twisted_web_hello.py), each answering `hello world` with a
# Content-Length, under Debian's wrk with one thread and 50 connections.
#
# Usage: bench/run_http.sh            (10 s per case)
#        QUICK=1 bench/run_http.sh    (2 s per case: a sanity run)
#
# Cases, each against a freshly started server:
#   plain      wrk -t1 -c50 --latency: one request in flight per connection
#              -> requests/s, p50/p99 latency (wrk's own percentiles, which wrk
#                 corrects for coordinated omission)
#   pipelined  the same with -s bench/wrk/pipeline.lua: 16 `GET /` per write,
#              the next 16 once all 16 responses are in -> requests/s, p50/p99 of
#              the round trip of a batch of 16 (as recorded: wrk's own pipelined
#              percentiles are broken, see the script)
# Before each measured run wrk loads the server for WARMUP seconds. The server
# runs pinned to SERVER_CPUS, wrk to WRK_CPUS. The server's CPU time
# (utime+stime from /proc/PID/stat) is read just before and just after the
# measured wrk run and divided by the requests wrk completed in it; requests/s,
# p99 and CPU per request are also given as ratios to hyper's in the same run.
# wrk's own CPU time over the measured run is kept as well: when it nears 100%
# of its CPU, wrk, not the server, limits the rate.
# Nothing is installed: wrk must be on PATH (Debian: apt-get install wrk), and
# twisted.web is taken from TWISTED_VENV (the twisted server is skipped if it
# is not there).
#
# Environment (defaults in brackets):
#   QUICK=1                 short run: DURATION=2, WARMUP=1
#   DURATION [10]           measured seconds per case (wrk -d, whole seconds)
#   WARMUP [1]              seconds of load before measuring (wrk -d, whole seconds)
#   SERVERS ["hyper torsion twisted"]
#   CASES ["plain pipelined"]
#   CONNECTIONS [50]        wrk -c (one wrk thread)
#   SERVER_CPUS [0]  WRK_CPUS [1]   taskset CPU lists
#   TWISTED_VENV [/work/venv-twisted]   a virtualenv with Twisted installed
#   CARGO_TARGET_DIR [<repo>/target]
#   RESULTS_DIR [a new temporary directory]  raw JSON lines, wrk output, server logs
#   OUT                     also write the markdown report to this file
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION="${DURATION:-2}"
    WARMUP="${WARMUP:-1}"
else
    DURATION="${DURATION:-10}"
    WARMUP="${WARMUP:-1}"
fi
SERVERS="${SERVERS:-hyper torsion twisted}"
CASES="${CASES:-plain pipelined}"
CONNECTIONS="${CONNECTIONS:-50}"
SERVER_CPUS="${SERVER_CPUS:-0}"
WRK_CPUS="${WRK_CPUS:-1}"
TWISTED_VENV="${TWISTED_VENV:-/work/venv-twisted}"
RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d -t torsion-httpbench.XXXXXX)}"
OUT="${OUT:-}"

RESULTS="$RESULTS_DIR/results.jsonl"
PIPELINE_LUA="$ROOT/bench/wrk/pipeline.lua"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
require_tools cargo python3 taskset getconf
command -v wrk >/dev/null ||
    die "wrk is required and not on PATH; on Debian: apt-get install -y --no-install-recommends wrk"
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 ]] || die "DURATION must be whole seconds (wrk -d), not $DURATION"
[[ "$WARMUP" =~ ^[0-9]+$ && "$WARMUP" -ge 1 ]] || die "WARMUP must be whole seconds (wrk -d), at least 1, not $WARMUP"
init_results

# --- build
log "building release binaries (target dir $TARGET)"
if [[ " $SERVERS " == *" hyper "* ]]; then
    (cd "$ROOT" && cargo build --release -p hyper-hello)
fi
if [[ " $SERVERS " == *" torsion "* ]]; then
    (cd "$ROOT" && cargo build --release -p torsion-web --example hello)
fi

# server_cmd NAME: sets CMD to the server's command line (the port goes last),
# or sets WHY to the reason it is unavailable and fails.
server_cmd() {
    case "$1" in
    hyper) CMD=("$TARGET/release/hyper-hello") ;;
    torsion) CMD=("$TARGET/release/examples/hello") ;;
    twisted)
        if ! "$TWISTED_VENV/bin/python" -c 'import twisted.web.server, twisted.internet.epollreactor' 2>/dev/null; then
            WHY="no Twisted in $TWISTED_VENV (set TWISTED_VENV to a virtualenv with Twisted)"
            return 1
        fi
        CMD=("$TWISTED_VENV/bin/python" "$ROOT/bench/servers/twisted_web_hello.py")
        ;;
    *)
        WHY="unknown server"
        return 1
        ;;
    esac
    cmd_present
}


# wrk_run OUTFILE WRK-ARGS...: runs wrk pinned to WRK_CPUS with its output in
# OUTFILE and prints its CPU seconds (user + system, from wait4).
wrk_run() {
    local outfile="$1"
    shift
    python3 - "$outfile" taskset -c "$WRK_CPUS" wrk "$@" <<'PY'
import os, subprocess, sys
with open(sys.argv[1], "w") as out:
    p = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT,
                         env=dict(os.environ))
    _, status, usage = os.wait4(p.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(usage.ru_utime + usage.ru_stime)
sys.exit(code)
PY
}

# parse_wrk FILE CASE: the JSON fields of one wrk output.
parse_wrk() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys

text = open(sys.argv[1]).read()
case = sys.argv[2]

def dur_us(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)]

out = {}
m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
out["rps"] = float(m.group(1))
m = re.search(r"^\s+(\d+) requests in ([\d.]+\w+),", text, re.M)
out["requests"] = int(m.group(1))
out["wrk_seconds"] = dur_us(m.group(2)) / 1e6
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
out["non_2xx"] = int(m.group(1)) if m else 0
if case == "pipelined":
    m = re.search(r"^batch-latency samples=(\d+) p50_us=(\d+) p90_us=(\d+) p99_us=(\d+) max_us=(\d+)", text, re.M)
    out["latency_samples"] = int(m.group(1))
    out["p50_us"] = float(m.group(2))
    out["p99_us"] = float(m.group(4))
    out["max_us"] = float(m.group(5))
else:
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", text, re.M)
        out[f"p{p}_us"] = dur_us(m.group(1))
    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
    out["max_us"] = dur_us(m.group(1))
print(json.dumps(out)[1:-1])
PY
}

# run_case SERVER CASE: a warm-up and a measured wrk run against a fresh server.
run_case() {
    local server="$1" case="$2" url extra=() t0 t1 wrk_cpu fields
    serve "$server"
    url="http://127.0.0.1:$PORT/"
    [[ "$case" == pipelined ]] && extra=(-s "$PIPELINE_LUA")
    local base="$RESULTS_DIR/$server-$case"
    if ! wrk_run "$base.warmup.txt" -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${extra[@]}" "$url" >/dev/null; then
        record "$server" "$case" '"error":"wrk failed in the warm-up"'
        log "$server $case: wrk FAILED in the warm-up (see $base.warmup.txt)"
        stop_server "$SERVER_PID"
        return
    fi
    t0="$(cpu_ticks "$SERVER_PID")"
    if wrk_cpu="$(WRK_CONNECTIONS="$CONNECTIONS" wrk_run "$base.txt" -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${extra[@]}" "$url")" &&
        t1="$(cpu_ticks "$SERVER_PID")" &&
        fields="$(parse_wrk "$base.txt" "$case")"; then
        record "$server" "$case" "$fields,\"server_cpu_s\":$(ticks_seconds "$t0" "$t1"),\"wrk_cpu_s\":$wrk_cpu"
        log "$server $case: $(grep -E '^Requests/sec' "$base.txt")"
    else
        record "$server" "$case" '"error":"wrk failed or its output could not be read"'
        log "$server $case: FAILED (see $base.txt)"
    fi
    stop_server "$SERVER_PID"
}

log "results, wrk output and server logs in $RESULTS_DIR"
log "$( (wrk --version 2>&1 || true) | head -n 1)"
ran_any=0
for case in $CASES; do
    case "$case" in
    plain | pipelined) ;;
    *) die "unknown case $case" ;;
    esac
    for server in $SERVERS; do
        if ! server_cmd "$server"; then
            log "skipping $server: $WHY"
            continue
        fi
        ran_any=1
        run_case "$server" "$case"
    done
done
[[ "$ran_any" == 1 ]] || die "no server could be run"

# --- the report
report() {
    report_python "$RESULTS" <<'PY'
c = env["CONNECTIONS"]
labels = {
    "plain": f"plain, -t1 -c{c}",
    "pipelined": f"pipelined ×16, -t1 -c{c}",
}
order = [k for k in env["CASES"].split() if k in labels]

def cpu_per_req(r):
    return r["server_cpu_s"] / r["requests"] * 1e6 if r and r["requests"] else None

print(f"HTTP benchmarks, {machine()}; "
      f"{env['DURATION']} s per case after {env['WARMUP']} s warm-up; "
      f"server on CPU {env['SERVER_CPUS']}, wrk on CPU {env['WRK_CPUS']}; {env['WRK_VERSION']}.")
print()
table(["case", "server", "requests/s", "p50 ms", "p99 ms", "server CPU µs/req", "req/s ÷ hyper",
       "p99 ÷ hyper", "CPU/req ÷ hyper", "server CPU", "wrk CPU", "errors"])
for case in order:
    base = get_ok("hyper", case)
    for server in servers:
        failed = [r for r in rows if r["server"] == server and r["case"] == case and "error" in r]
        r = get_ok(server, case)
        if r is None:
            if failed:
                print(f"| {labels[case]} | {server} | failed: {failed[0]['error']} ||||||||||")
            continue
        secs = r["wrk_seconds"]
        errors = r["socket_errors"] + r["non_2xx"]
        print(f"| {labels[case]} | {server} | {fmt(r['rps'])} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} "
              f"| {fmt(cpu_per_req(r), 2)} | {ratio(r['rps'], base and base['rps'])} "
              f"| {ratio(r['p99_us'], base and base['p99_us'])} "
              f"| {ratio(cpu_per_req(r), cpu_per_req(base))} "
              f"| {r['server_cpu_s'] / secs * 100:.0f}% | {r['wrk_cpu_s'] / secs * 100:.0f}% | {errors} |")
print()
print("requests/s: wrk's; p50/p99: plain, wrk's percentiles of the request latency "
      "(wrk corrects them for coordinated omission); pipelined, the percentiles of the round "
      "trip of a batch of 16 requests as wrk recorded it (bench/wrk/pipeline.lua); "
      "server CPU µs/req: the server's utime+stime over the measured run per request; "
      "server/wrk CPU: share of one core over the run; errors: socket errors and non-2xx "
      "responses. When wrk's share nears 100% it, not the server, limits the rate.")
PY
}
WRK_VERSION="$( (wrk --version 2>&1 || true) | head -n 1 | sed 's/ Copyright.*//')"
export DURATION WARMUP SERVER_CPUS WRK_CPUS CASES CONNECTIONS WRK_VERSION
write_report report
log "raw results: $RESULTS"
