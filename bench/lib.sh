# shellcheck shell=bash
# bench/lib.sh: what the comparison scripts (bench/run_*.sh) share. Each sources it
# once its knobs are set; sourcing defines the functions below, CLK_TCK and
# REPORT_PRELUDE, and installs the exit trap that stops every server still running.
#
#   log MSG, die MSG           progress and fatal errors on stderr (die names the script)
#   require_tools TOOL...      dies unless each tool is on PATH
#   init_results               creates RESULTS_DIR and empties RESULTS
#   at_exit CMD                runs CMD (a string) at exit, after the servers are stopped
#
#   free_port                  prints a free TCP port on 127.0.0.1
#   start_server NAME PORT CMD...
#                              starts CMD in the background, pinned to SERVER_CPUS, without
#                              RUST_BACKTRACE and RUST_LIB_BACKTRACE (with either set, every
#                              torsion `Failure` captures a backtrace), its output appended
#                              to $RESULTS_DIR/NAME.log; waits until PORT accepts
#                              connections; sets SERVER_PID
#   wait_listening NAME PID PORT
#                              waits (10 s at most) until PORT accepts; dies if PID exits
#   track_pid PID, untrack_pid PID, stop_server PID
#                              a process to stop at exit, or no longer; stops one now
#                              and reaps it
#
#   cpu_ticks PID              utime + stime of a process (from /proc/PID/stat), clock ticks
#   ticks_seconds T0 T1        (T1 - T0) ticks in seconds
#   vm_kb PID FIELD            a /proc/PID/status size (VmRSS, VmHWM, ...) in kB
#   record SERVER CASE FIELDS  appends {"server":…,"case":…,FIELDS} to RESULTS
#   loadgen_measure SERVER CASE LOADGEN-ARGS...
#                              one bench/loadgen run (LOADGEN, pinned to LOADGEN_CPUS,
#                              DURATION after WARMUP) against the server at SERVER_PID on
#                              PORT, recorded with the server's CPU over the whole run
#
#   report_python ARGS... <<'PY' … PY
#                              runs a Python report after REPORT_PRELUDE: the rows of
#                              sys.argv[1] (JSON lines), the servers in order of first
#                              appearance, and get/get_ok/fmt/ratio/pct/machine/table
#   write_report FUNC          runs FUNC to stdout and, when OUT is set, into OUT too
#
# Only processes started through start_server or given to track_pid are ever stopped.

BENCH_SCRIPT="$(basename "$0")"
CLK_TCK="$(getconf CLK_TCK)"
BENCH_PIDS=()
BENCH_EXIT_CMDS=()

log() { printf '== %s\n' "$*" >&2; }
die() {
    printf '%s: %s\n' "$BENCH_SCRIPT" "$*" >&2
    exit 1
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is required"
    done
}

init_results() {
    mkdir -p "$RESULTS_DIR"
    : >"$RESULTS"
}

at_exit() { BENCH_EXIT_CMDS+=("$1"); }

track_pid() { BENCH_PIDS+=("$1"); }

untrack_pid() {
    local kept=() pid
    for pid in "${BENCH_PIDS[@]}"; do
        [[ "$pid" == "$1" ]] || kept+=("$pid")
    done
    BENCH_PIDS=("${kept[@]}")
}

stop_server() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    untrack_pid "$pid"
    if [[ "$pid" == "${SERVER_PID:-}" ]]; then
        SERVER_PID=""
    fi
}

bench_exit() {
    local pid cmd
    for pid in "${BENCH_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    BENCH_PIDS=()
    for cmd in "${BENCH_EXIT_CMDS[@]}"; do
        eval "$cmd" || true
    done
}
trap bench_exit EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_listening() {
    local name="$1" pid="$2" port="$3" _
    for _ in $(seq 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            untrack_pid "$pid"
            tail -n 20 "$RESULTS_DIR/$name.log" >&2
            die "the $name server exited at startup"
        fi
        if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "the $name server did not listen on port $port within 10 s"
}

start_server() {
    local name="$1" port="$2"
    shift 2
    env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
        taskset -c "$SERVER_CPUS" "$@" >>"$RESULTS_DIR/$name.log" 2>&1 &
    SERVER_PID=$!
    track_pid "$SERVER_PID"
    wait_listening "$name" "$SERVER_PID" "$port"
}

# cmd_present: whether the program of CMD (set by a script's server_cmd) is there, as a path
# or a name on PATH (env, bash); if not, WHY says so.
cmd_present() {
    command -v "${CMD[0]}" >/dev/null && return 0
    # shellcheck disable=SC2034  # read by the script that called server_cmd
    WHY="${CMD[0]} is missing"
    return 1
}

# serve NAME [ARGS...]: a fresh server running CMD with the port, then ARGS, appended, on a
# free port; sets SERVER_PID and PORT.
serve() {
    local name="$1"
    shift
    PORT="$(free_port)"
    start_server "$name" "$PORT" "${CMD[@]}" "$PORT" "$@"
}

cpu_ticks() {
    local stat fields
    stat="$(<"/proc/$1/stat")"
    # The fields after the command name, which may hold spaces: state is [0].
    read -ra fields <<<"${stat##*) }"
    echo $((fields[11] + fields[12]))
}

ticks_seconds() {
    awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f\n", (b - a) / hz }'
}

vm_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

record() { printf '{"server":"%s","case":"%s",%s}\n' "$1" "$2" "$3" >>"$RESULTS"; }

# shellcheck disable=SC2153 # PORT, like SERVER_PID, is set by the caller's server start
loadgen_measure() {
    local server="$1" case="$2" t0 t1 out
    shift 2
    t0="$(cpu_ticks "$SERVER_PID")"
    if out="$(taskset -c "$LOADGEN_CPUS" "$LOADGEN" --json "$@" --addr "127.0.0.1:$PORT" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID")"; then
        t1="$(cpu_ticks "$SERVER_PID")"
        record "$server" "$case" "\"whole_run_server_cpu_s\":$(ticks_seconds "$t0" "$t1"),\"result\":$out"
        log "$server $case: $out"
    else
        record "$server" "$case" '"error":"loadgen failed (see stderr)"'
        log "$server $case: FAILED"
    fi
}

REPORT_PRELUDE="$(
    cat <<'PY'
import datetime, json, os, platform, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = os.environ
servers = []
for r in rows:
    if r["server"] not in servers:
        servers.append(r["server"])

def get(server, case):
    """The first row of SERVER in CASE, failed or not."""
    for r in rows:
        if r["server"] == server and r["case"] == case:
            return r
    return None

def get_ok(server, case):
    """The first row of SERVER in CASE that did not fail."""
    for r in rows:
        if r["server"] == server and r["case"] == case and "error" not in r:
            return r
    return None

def fmt(x, digits=1):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"

def pct(u):
    return "–" if u is None else f"{u * 100:.0f}%"

def machine():
    """Today's date and the machine, for a report's first line."""
    return (f"{datetime.date.today().isoformat()}, {platform.node()} "
            f"({os.cpu_count()} CPUs, Linux {platform.release()})")

def table(columns, left=2):
    """A markdown table's header: the first LEFT columns left-aligned, the rest right."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|")
PY
)"

report_python() {
    python3 -c "$REPORT_PRELUDE"$'\n'"$(cat)" "$@"
}

write_report() {
    if [[ -n "${OUT:-}" ]]; then
        "$1" | tee "$OUT"
    else
        "$1"
    fi
}
