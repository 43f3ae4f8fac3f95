#!/usr/bin/env bash
# TLS benchmarks: TLS echo servers on torsion (Reactor::listen_tls) and tokio
# (tokio-rustls on a current_thread runtime), both on rustls 0.23 with the ring
# provider and the same rustls server configuration, under the same load
# generator (bench/loadgen).
#
# Usage: bench/run_tls.sh            (10 s per case)
#        QUICK=1 bench/run_tls.sh    (2 s per case: a sanity run)
#
# Cases, each against a freshly started server:
#   pp50x64, pp50x16k    pingpong over TLS, 50 x 64 B and 50 x 16 KiB
#                        -> msgs/s, MB/s, p50/p99 round trip
#   handshake            new connection each: connect, full TLS handshake,
#                        1-byte echo, RST; the server runs with session
#                        resumption off -> handshakes/s
#   handshake-resume     the same with resumption on in the server and a
#                        client session cache shared by all connections, so
#                        the handshakes resume (TLS 1.3 tickets)
# The generator drives pingpong with its epoll engine (rustls's buffered
# ClientConnection over non-blocking sockets, one epoll loop per thread) and
# the handshake cases with one OS thread and blocking socket per loop, as the
# plain connect case of run_network.sh does. Certificates are a throw-away
# authority and a localhost/127.0.0.1 ECDSA P-256 server certificate made with
# rcgen at run time (`loadgen tls-certs`); the client verifies against that
# authority (TLS_VERIFY=ca) or accepts any certificate (TLS_VERIFY=any), and
# asks for the name localhost.
# The server runs pinned to SERVER_CPUS, the generator to LOADGEN_CPUS. The
# server's CPU time (utime+stime from /proc/PID/stat) is sampled by the
# generator at the edges of the measured window and divided by the messages
# (or handshakes) in it; throughput and CPU per message are also given as
# ratios to tokio's in the same run. The raw results also keep the server's
# CPU time over the whole generator run (setup and warm-up included).
# The servers run without RUST_BACKTRACE and RUST_LIB_BACKTRACE: with either
# set, every torsion `Failure` (one per connection end) captures a backtrace,
# which costs the handshake cases several per cent of the server's CPU.
#
# Environment (defaults in brackets):
#   QUICK=1                 short run: DURATION=2, WARMUP=0.5
#   DURATION [10]           measured seconds per case
#   WARMUP [1]              seconds of load before measuring
#   SERVERS ["tokio torsion"]
#   CASES ["pp50x64 pp50x16k handshake handshake-resume"]
#   HANDSHAKE_CONCURRENCY [4]  concurrent loops in the handshake cases
#   TLS_VERIFY [ca]         ca: verify against the throw-away authority; any: accept any
#   SERVER_CPUS [0]  LOADGEN_CPUS [1]   taskset CPU lists (the generator uses
#                           one thread per CPU it may run on for pingpong)
#   CARGO_TARGET_DIR [<repo>/target]
#   RESULTS_DIR [a new temporary directory]  raw JSON lines, certificates, server logs
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
SERVERS="${SERVERS:-tokio torsion}"
CASES="${CASES:-pp50x64 pp50x16k handshake handshake-resume}"
HANDSHAKE_CONCURRENCY="${HANDSHAKE_CONCURRENCY:-4}"
TLS_VERIFY="${TLS_VERIFY:-ca}"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOADGEN_CPUS="${LOADGEN_CPUS:-1}"
RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d -t torsion-tlsbench.XXXXXX)}"
OUT="${OUT:-}"

LOADGEN="$TARGET/release/loadgen"
RESULTS="$RESULTS_DIR/results.jsonl"
CERTS="$RESULTS_DIR/certs"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
require_tools cargo python3 taskset getconf
case "$TLS_VERIFY" in
ca | any) ;;
*) die "TLS_VERIFY must be ca or any, not $TLS_VERIFY" ;;
esac
init_results

# --- build
log "building release binaries (target dir $TARGET)"
(cd "$ROOT" && cargo build --release -p torsion-loadgen -p tokio-tls-echo)
if [[ " $SERVERS " == *" torsion "* ]]; then
    (cd "$ROOT" && cargo build --release -p torsion --example tls_echo_server)
fi

# --- throw-away certificates
"$LOADGEN" tls-certs "$CERTS" || die "could not make certificates in $CERTS"
if [[ "$TLS_VERIFY" == ca ]]; then
    VERIFY_ARGS=(--tls-ca "$CERTS/ca.pem")
else
    VERIFY_ARGS=()
fi

# server_cmd NAME: sets CMD to the server's command line (the port, the
# certificate, the key and the resumption option are added by start_server),
# or sets WHY to the reason it is unavailable and fails.
server_cmd() {
    case "$1" in
    tokio) CMD=("$TARGET/release/tokio-tls-echo") ;;
    torsion) CMD=("$TARGET/release/examples/tls_echo_server") ;;
    *)
        WHY="unknown server"
        return 1
        ;;
    esac
    cmd_present
}

# serve_tls NAME RESUMPTION (on|off): a fresh TLS server on a free port; sets SERVER_PID, PORT.
serve_tls() {
    local extra=()
    [[ "$2" == off ]] && extra=(--no-resumption)
    serve "$1" "$CERTS/cert.pem" "$CERTS/key.pem" "${extra[@]}"
}

# run_load SERVER CASE RESUMPTION LOADGEN-ARGS...: one generator run against a
# fresh server started with session resumption RESUMPTION (on|off).
run_load() {
    local server="$1" case="$2" resumption="$3"
    shift 3
    serve_tls "$server" "$resumption"
    loadgen_measure "$server" "$case" "$@"
    stop_server "$SERVER_PID"
}

log "results, certificates and server logs in $RESULTS_DIR"
ran_any=0
for server in $SERVERS; do
    if ! server_cmd "$server"; then
        log "skipping $server: $WHY"
        continue
    fi
    ran_any=1
    for case in $CASES; do
        case "$case" in
        pp50x64) run_load "$server" "$case" on pingpong --tls "${VERIFY_ARGS[@]}" --connections 50 --payload 64 ;;
        pp50x16k) run_load "$server" "$case" on pingpong --tls "${VERIFY_ARGS[@]}" --connections 50 --payload 16384 ;;
        handshake) run_load "$server" "$case" off handshake "${VERIFY_ARGS[@]}" --concurrency "$HANDSHAKE_CONCURRENCY" ;;
        handshake-resume) run_load "$server" "$case" on handshake "${VERIFY_ARGS[@]}" --concurrency "$HANDSHAKE_CONCURRENCY" --resumption ;;
        *) die "unknown case $case" ;;
        esac
    done
done
[[ "$ran_any" == 1 ]] || die "no server could be run"

# --- the report
report() {
    report_python "$RESULTS" <<'EOF'
c = env["HANDSHAKE_CONCURRENCY"]
labels = {
    "pp50x64": "TLS pingpong 50 × 64 B",
    "pp50x16k": "TLS pingpong 50 × 16 KiB",
    "handshake": f"handshakes, resumption off (×{c})",
    "handshake-resume": f"handshakes, resumption on (×{c})",
}
order = [c for c in env["CASES"].split() if c in labels]

print(f"TLS benchmarks, {machine()}; "
      f"{env['DURATION']} s per case after {env['WARMUP']} s warm-up; "
      f"server on CPU {env['SERVER_CPUS']}, loadgen on CPU {env['LOADGEN_CPUS']}; "
      f"rustls 0.23 (ring), client verification: {env['TLS_VERIFY']}.")
print()
table(["case", "server", "rate /s", "MB/s", "resumed", "p50 µs", "p99 µs", "server CPU µs/op",
       "rate ÷ tokio", "CPU/op ÷ tokio", "server CPU", "loadgen CPU µs/op", "loadgen CPU"])
for case in order:
    base = get("tokio", case)
    base = base.get("result") if base else None
    for server in servers:
        r = get(server, case)
        if r is None:
            continue
        if "error" in r:
            print(f"| {labels[case]} | {server} | failed: {r['error']} |||||||||||")
            continue
        x = r["result"]
        mb = x.get("mb_per_s")
        n = x.get("handshakes")
        resumed = f"{x['resumed'] / n * 100:.0f}%" if n and "resumed" in x else ""
        print(f"| {labels[case]} | {server} | {fmt(x['rate_per_s'])} | {fmt(mb) if mb is not None else ''} "
              f"| {resumed} | {fmt(x['p50_us'])} | {fmt(x['p99_us'])} | {fmt(x['server_cpu_us_per_op'], 2)} "
              f"| {ratio(x['rate_per_s'], base and base['rate_per_s'])} "
              f"| {ratio(x['server_cpu_us_per_op'], base and base['server_cpu_us_per_op'])} "
              f"| {pct(x['server_cpu_util'])} | {fmt(x['loadgen_cpu_us_per_op'], 2)} "
              f"| {pct(x['loadgen_cpu_util'])} |")
print()
print("rate: messages (round trips) or handshakes per second; MB/s: payload bytes each way; "
      "resumed: share of the measured handshakes that resumed a session; "
      "server CPU µs/op: the server's utime+stime over the measured window per message or handshake; "
      "loadgen CPU µs/op: the same for the load generator; "
      "server/loadgen CPU: share of one core over the window. "
      "When the loadgen's share nears 100% of its CPUs it, not the server, limits the rate.")
EOF
}
export DURATION WARMUP SERVER_CPUS LOADGEN_CPUS CASES HANDSHAKE_CONCURRENCY TLS_VERIFY
write_report report
log "raw results: $RESULTS"
