#!/usr/bin/env bash
# Network benchmarks: echo servers on torsion, tokio (current_thread) and
# Twisted (epollreactor) under the same load generator (bench/loadgen).
#
# Usage: bench/run_network.sh            (10 s per case)
#        QUICK=1 bench/run_network.sh    (2 s per case: a sanity run)
#
# Cases, each against a freshly started server:
#   pingpong 1 x 64 B, 50 x 64 B, 50 x 16 KiB  -> msgs/s, MB/s, p50/p99 round trip
#   connect                                    -> connections/s (connect, 1-byte echo, RST)
#   idle                                       -> server VmRSS per idle connection
# The server runs pinned to SERVER_CPUS, the generator to LOADGEN_CPUS. The
# server's CPU time (utime+stime from /proc/PID/stat) is sampled by the
# generator at the edges of the measured window and divided by the messages
# (or connections) in it; throughput and CPU per message are also given as
# ratios to tokio's. The raw results also keep the server's CPU time over the
# whole generator run (setup and warm-up included) as a cross-check.
#
# Environment (defaults in brackets):
#   QUICK=1                 short run: DURATION=2, WARMUP=0.5
#   DURATION [10]           measured seconds per case
#   WARMUP [1]              seconds of load before measuring
#   SERVERS ["tokio torsion twisted"]; also torsion-io_uring (the same server on the
#                           io_uring backend), torsion-wN (the runner's echo plugin with
#                           --workers N) and tokio-mtN (tokio's multi-thread runtime, N
#                           workers): for those, give the server several CPUs
#                           (SERVER_CPUS=0-1 LOADGEN_CPUS=0-1 on a 2-core machine)
#   CASES ["pp1x64 pp50x64 pp50x16k connect idle"]
#   IDLE_CONNS [2000]       connections held in the idle case
#   CONNECT_CONCURRENCY [4] concurrent connect loops in the connect case
#   SERVER_CPUS [0]  LOADGEN_CPUS [1]   taskset CPU lists (the generator uses
#                           one thread per CPU it may run on)
#   LOADGEN_ENGINE [epoll]  pingpong engine: epoll, tokio or threads
#   TWISTED_VENV [/work/venv-twisted]   created with Twisted from PyPI if missing
#   CARGO_TARGET_DIR [<repo>/target]
#   RESULTS_DIR [a new temporary directory]  raw JSON lines and server logs
#   OUT                     also write the markdown report to this file
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION="${DURATION:-2}"
    WARMUP="${WARMUP:-0.5}"
else
    DURATION="${DURATION:-10}"
    WARMUP="${WARMUP:-1}"
fi
SERVERS="${SERVERS:-tokio torsion twisted}"
CASES="${CASES:-pp1x64 pp50x64 pp50x16k connect idle}"
IDLE_CONNS="${IDLE_CONNS:-2000}"
CONNECT_CONCURRENCY="${CONNECT_CONCURRENCY:-4}"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOADGEN_CPUS="${LOADGEN_CPUS:-1}"
LOADGEN_ENGINE="${LOADGEN_ENGINE:-epoll}"
TWISTED_VENV="${TWISTED_VENV:-/work/venv-twisted}"
RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d -t torsion-netbench.XXXXXX)}"
OUT="${OUT:-}"

LOADGEN="$TARGET/release/loadgen"
RESULTS="$RESULTS_DIR/results.jsonl"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
require_tools cargo python3 taskset getconf
init_results

# --- descriptors: the idle case holds IDLE_CONNS sockets in the server and in
# the generator (each its own process, both inheriting this limit).
need_fds=$((IDLE_CONNS + 256))
cur_fds="$(ulimit -n)"
if [[ "$cur_fds" != unlimited && "$cur_fds" -lt "$need_fds" ]]; then
    ulimit -n "$need_fds" 2>/dev/null ||
        die "cannot raise the open-file limit to $need_fds (soft $(ulimit -n), hard $(ulimit -Hn)); raise the hard limit or lower IDLE_CONNS"
fi

# --- build
log "building release binaries (target dir $TARGET)"
(cd "$ROOT" && cargo build --release -p torsion-loadgen -p tokio-echo)
if [[ " $SERVERS " == *" torsion-w"* ]]; then
    (cd "$ROOT" && cargo build --release -p torsion-cli --bin torsion)
fi
# ---- TORSION SLOT -----------------------------------------------------------
# torsion's echo server is the example crates/torsion/examples/echo_server.rs
# (`cargo run --release -p torsion --example echo_server -- PORT`). Until it
# exists the torsion server is skipped below.
if [[ " $SERVERS " == *" torsion "* || " $SERVERS " == *" torsion-io_uring "* ]]; then
    (cd "$ROOT" && cargo build --release -p torsion --example echo_server)
fi
# ------------------------------------------------------------------------------

# --- Twisted in a virtualenv. Another process may be creating the same venv:
# use it once `import twisted` works there, else create it and install Twisted,
# serialised by a lock file next to it.
twisted_ok() {
    [[ -x "$TWISTED_VENV/bin/python" ]] &&
        "$TWISTED_VENV/bin/python" -c 'import twisted.internet.epollreactor' 2>/dev/null
}
ensure_twisted() {
    twisted_ok && return 0
    command -v flock >/dev/null || die "flock is required to set up $TWISTED_VENV"
    mkdir -p "$(dirname "$TWISTED_VENV")"
    (
        flock -w 900 9 || exit 1
        twisted_ok && exit 0
        if [[ -e "$TWISTED_VENV" ]]; then
            # Someone else's venv in the making: give them a while to finish.
            for _ in $(seq 60); do
                twisted_ok && exit 0
                sleep 2
            done
        fi
        [[ -x "$TWISTED_VENV/bin/python" ]] || python3 -m venv "$TWISTED_VENV" || exit 1
        "$TWISTED_VENV/bin/python" -m pip install --quiet twisted || exit 1
        twisted_ok
    ) 9>"$TWISTED_VENV.lock"
}

# server_cmd NAME: sets CMD to the server's command line (the port goes last),
# or sets WHY to the reason it is unavailable and fails.
server_cmd() {
    case "$1" in
    tokio) CMD=("$TARGET/release/tokio-echo") ;;
    torsion) CMD=("$TARGET/release/examples/echo_server") ;; # TORSION SLOT
    torsion-io_uring)
        CMD=(env TORSION_REACTOR=io_uring "$TARGET/release/examples/echo_server")
        [[ -x "${CMD[2]}" ]] || {
            WHY="${CMD[2]} is missing"
            return 1
        }
        ;;
    torsion-w[0-9]*)
        # The runner's echo plugin; the port, appended by serve, becomes its endpoint.
        CMD=(bash -c 'exec "$0" --workers "$1" --log-level warn echo --listen "tcp:$2:interface=127.0.0.1"'
            "$TARGET/release/torsion" "${1#torsion-w}")
        [[ -x "${CMD[3]}" ]] || {
            WHY="${CMD[3]} is missing"
            return 1
        }
        ;;
    tokio-mt[0-9]*)
        CMD=(bash -c 'exec "$0" "$2" "$1"' "$TARGET/release/tokio-echo" "${1#tokio-mt}")
        ;;
    twisted)
        if ! ensure_twisted; then
            WHY="Twisted could not be set up in $TWISTED_VENV"
            return 1
        fi
        CMD=("$TWISTED_VENV/bin/python" "$ROOT/bench/servers/twisted_echo.py")
        ;;
    *)
        WHY="unknown server"
        return 1
        ;;
    esac
    cmd_present
}


# run_load SERVER CASE LOADGEN-ARGS...: one generator run against a fresh server.
run_load() {
    local server="$1" case="$2"
    shift 2
    serve "$server"
    loadgen_measure "$server" "$case" "$@"
    stop_server "$SERVER_PID"
}

run_idle() {
    local server="$1" line="" rss0 rss1 in_fd out_fd idle_pid
    serve "$server"
    sleep 0.5
    rss0="$(vm_kb "$SERVER_PID" VmRSS)"
    coproc IDLE_GEN {
        exec taskset -c "$LOADGEN_CPUS" "$LOADGEN" idle --addr "127.0.0.1:$PORT" \
            --connections "$IDLE_CONNS" --hold 600 --until-stdin-eof
    }
    idle_pid=$IDLE_GEN_PID
    track_pid "$idle_pid"
    out_fd=${IDLE_GEN[0]}
    in_fd=${IDLE_GEN[1]}
    while read -r -t 120 -u "$out_fd" line; do
        [[ "$line" == ESTABLISHED* || "$line" == FAILED* ]] && break
    done
    if [[ "$line" == "ESTABLISHED $IDLE_CONNS" ]]; then
        sleep 1 # let the server settle
        rss1="$(vm_kb "$SERVER_PID" VmRSS)"
        record "$server" idle "\"connections\":$IDLE_CONNS,\"rss_before_kb\":$rss0,\"rss_after_kb\":$rss1"
        log "$server idle: VmRSS $rss0 kB -> $rss1 kB with $IDLE_CONNS connections"
    else
        line="${line//[\"\\]/}"
        record "$server" idle "\"error\":\"idle connections not established: ${line:-no answer}\""
        log "$server idle: FAILED (${line:-no answer})"
        kill "$idle_pid" 2>/dev/null || true
    fi
    exec {in_fd}>&- # end of input: the generator closes its connections and exits
    wait "$idle_pid" 2>/dev/null || true
    untrack_pid "$idle_pid"
    stop_server "$SERVER_PID"
}

log "results and server logs in $RESULTS_DIR"
ran_any=0
for server in $SERVERS; do
    if ! server_cmd "$server"; then
        log "skipping $server: $WHY"
        continue
    fi
    ran_any=1
    for case in $CASES; do
        case "$case" in
        pp1x64) run_load "$server" "$case" pingpong --connections 1 --payload 64 --engine "$LOADGEN_ENGINE" ;;
        pp50x64) run_load "$server" "$case" pingpong --connections 50 --payload 64 --engine "$LOADGEN_ENGINE" ;;
        pp50x16k) run_load "$server" "$case" pingpong --connections 50 --payload 16384 --engine "$LOADGEN_ENGINE" ;;
        connect) run_load "$server" "$case" connect --concurrency "$CONNECT_CONCURRENCY" ;;
        idle) run_idle "$server" ;;
        *) die "unknown case $case" ;;
        esac
    done
done
[[ "$ran_any" == 1 ]] || die "no server could be run"

# --- the report
report() {
    report_python "$RESULTS" <<'EOF'
labels = {
    "pp1x64": "pingpong 1 × 64 B",
    "pp50x64": "pingpong 50 × 64 B",
    "pp50x16k": "pingpong 50 × 16 KiB",
    "connect": f"connect rate (×{env['CONNECT_CONCURRENCY']}, RST)",
}
order = [c for c in env["CASES"].split() if c in labels]

print(f"Network benchmarks, {machine()}; "
      f"{env['DURATION']} s per case after {env['WARMUP']} s warm-up; "
      f"server on CPU {env['SERVER_CPUS']}, loadgen on CPU {env['LOADGEN_CPUS']} "
      f"(pingpong engine {env['LOADGEN_ENGINE']}).")
print()
table(["case", "server", "rate /s", "MB/s", "p50 µs", "p99 µs", "server CPU µs/op", "rate ÷ tokio",
       "CPU/op ÷ tokio", "server CPU", "loadgen CPU µs/op", "loadgen CPU"])
for case in order:
    base = get("tokio", case)
    base = base.get("result") if base else None
    for server in servers:
        r = get(server, case)
        if r is None:
            continue
        if "error" in r:
            print(f"| {labels[case]} | {server} | failed: {r['error']} ||||||||||")
            continue
        x = r["result"]
        mb = x.get("mb_per_s")
        print(f"| {labels[case]} | {server} | {fmt(x['rate_per_s'])} | {fmt(mb) if mb is not None else ''} "
              f"| {fmt(x['p50_us'])} | {fmt(x['p99_us'])} | {fmt(x['server_cpu_us_per_op'], 2)} "
              f"| {ratio(x['rate_per_s'], base and base['rate_per_s'])} "
              f"| {ratio(x['server_cpu_us_per_op'], base and base['server_cpu_us_per_op'])} "
              f"| {pct(x['server_cpu_util'])} | {fmt(x['loadgen_cpu_us_per_op'], 2)} "
              f"| {pct(x['loadgen_cpu_util'])} |")

if "idle" in env["CASES"].split():
    n = env["IDLE_CONNS"]
    print()
    table([f"memory, {n} idle connections", "VmRSS before", f"VmRSS with {n}", "per connection", "÷ tokio"], left=1)
    base = get("tokio", "idle")
    per_base = None
    if base and "error" not in base:
        per_base = (base["rss_after_kb"] - base["rss_before_kb"]) / base["connections"]
    for server in servers:
        r = get(server, "idle")
        if r is None:
            continue
        if "error" in r:
            print(f"| {server} | failed: {r['error']} ||||")
            continue
        per = (r["rss_after_kb"] - r["rss_before_kb"]) / r["connections"]
        print(f"| {server} | {r['rss_before_kb'] / 1024:.1f} MiB | {r['rss_after_kb'] / 1024:.1f} MiB "
              f"| {per:.2f} KiB | {ratio(per, per_base)} |")
print()
print("rate: messages (round trips) or connections per second; MB/s: payload bytes each way; "
      "server CPU µs/op: the server's utime+stime over the measured window per message or connection; "
      "loadgen CPU µs/op: the same for the load generator; "
      "server/loadgen CPU: share of one core over the window. "
      "When the loadgen's share nears 100% of its CPUs it, not the server, limits the rate.")
EOF
}
export DURATION WARMUP SERVER_CPUS LOADGEN_CPUS LOADGEN_ENGINE CASES IDLE_CONNS CONNECT_CONCURRENCY
write_report report
log "raw results: $RESULTS"
