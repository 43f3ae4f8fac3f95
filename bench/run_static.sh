#!/usr/bin/env bash
# Static-file benchmark: one large file downloaded with curl from torsion's runner
# (`torsion web --path DIR`, crates/torsion-cli) and from Debian's nginx serving the
# same directory, twice: with `sendfile on` as Debian ships it (the kernel sends the
# page cache itself) and with `sendfile off` (read into a buffer and written from it,
# as torsion-web's file producer does).
#
# Usage: bench/run_static.sh            (1 GiB file, 5 downloads per server, 3 x 10 concurrent)
#        QUICK=1 bench/run_static.sh    (256 MiB, 3 downloads, 1 x 10 concurrent: a sanity run)
#
# The file is random bytes from /dev/urandom (not a sparse file or zeros, whose pages the
# kernel could share or skip), in a fresh directory, read once by each server before the
# measured downloads (and checked with cmp), so every download comes from the page cache.
# Each server is started once, on its own free port on 127.0.0.1, pinned to SERVER_CPUS;
# curl runs pinned to CLIENT_CPUS and writes to /dev/null. Cases:
#   single       ROUNDS rounds of one download from each server, the servers' order
#                rotated every round (so each goes first as often); each download is a
#                new connection -> curl's %{speed_download}, and the serving process's
#                CPU time (utime+stime from /proc/PID/stat: torsion's process, nginx's
#                one worker) before and after, per GiB
#   concurrent   CONC_ROUNDS rounds of CONCURRENCY simultaneous downloads from each
#                server -> total bytes over the wall time of the round, CPU per GiB
#   memory       the serving process's peak RSS (VmHWM from /proc/PID/status) when it
#                started, after the single downloads and after the concurrent ones
# Throughputs are also given as ratios to nginx (sendfile on) in the same run: of the
# medians, and the median of each round's ratio (torsion's download against nginx's in the
# same round).
#
# nginx: 1 worker process, `daemon off`, `access_log off`, pid, error log and temporary
# paths in RESULTS_DIR, `sendfile on; tcp_nopush on;` as Debian's nginx.conf, and a second
# `server` on another port with `sendfile off` (served by the same worker). If nginx is
# missing it is installed with apt-get (nginx-light, else nginx), as root or through
# `sudo -n`; Debian's package may start its own nginx service on port 80.
#
# Environment (defaults in brackets):
#   QUICK=1                 SIZE_MIB=256, ROUNDS=3, CONC_ROUNDS=1
#   SIZE_MIB [1024]         the file's size
#   ROUNDS [5]              single downloads per server
#   CONCURRENCY [10]        downloads at once in the concurrent case
#   CONC_ROUNDS [3]         concurrent rounds per server (0: skip the case)
#   SERVERS ["nginx nginx-nosendfile torsion", and torsion-baseline with TORSION_BASELINE]
#   TORSION [$CARGO_TARGET_DIR/release/torsion]   the runner to measure (built first)
#   TORSION_BASELINE        another runner binary (say, an earlier build) to measure beside
#                           it, as the server torsion-baseline
#   SERVER_CPUS [0]  CLIENT_CPUS [1]   taskset CPU lists (servers; curl)
#   CARGO_TARGET_DIR [<repo>/target]
#   RESULTS_DIR [a new temporary directory]  raw JSON lines, nginx's files, server logs;
#                           the file is served from RESULTS_DIR/www and deleted at exit
#   OUT                     also write the markdown report to this file
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${QUICK:-0}" == 1 ]]; then
    SIZE_MIB="${SIZE_MIB:-256}"
    ROUNDS="${ROUNDS:-3}"
    CONC_ROUNDS="${CONC_ROUNDS:-1}"
else
    SIZE_MIB="${SIZE_MIB:-1024}"
    ROUNDS="${ROUNDS:-5}"
    CONC_ROUNDS="${CONC_ROUNDS:-3}"
fi
CONCURRENCY="${CONCURRENCY:-10}"
TORSION_BASELINE="${TORSION_BASELINE:-}"
SERVERS="${SERVERS:-nginx nginx-nosendfile torsion${TORSION_BASELINE:+ torsion-baseline}}"
SERVER_CPUS="${SERVER_CPUS:-0}"
CLIENT_CPUS="${CLIENT_CPUS:-1}"
RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d -t torsion-staticbench.XXXXXX)}"
OUT="${OUT:-}"

RESULTS="$RESULTS_DIR/results.jsonl"
WWW="$RESULTS_DIR/www"
FILE_NAME="big.bin"
SIZE=$((SIZE_MIB * 1024 * 1024))
TORSION="${TORSION:-$TARGET/release/torsion}"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
require_tools cargo python3 taskset getconf curl cmp awk
for n in "$SIZE_MIB" "$ROUNDS" "$CONCURRENCY" "$CONC_ROUNDS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "SIZE_MIB, ROUNDS, CONCURRENCY and CONC_ROUNDS must be whole numbers"
done
[[ "$SIZE_MIB" -ge 1 && "$ROUNDS" -ge 1 ]] || die "SIZE_MIB and ROUNDS must be at least 1"
init_results
# shellcheck disable=SC2016 # expanded when it runs
at_exit 'rm -rf "$WWW"'

# --- nginx, installed if missing
find_nginx() {
    NGINX="$(command -v nginx || true)"
    [[ -n "$NGINX" ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; }
    [[ -n "$NGINX" ]]
}
if [[ " $SERVERS " == *" nginx"* ]] && ! find_nginx; then
    if [[ "$(id -u)" == 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        die "nginx is missing and cannot be installed without root: apt-get install -y nginx-light"
    fi
    log "installing nginx with apt-get"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light </dev/null >&2 ||
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx </dev/null >&2 ||
        die "apt-get could not install nginx"
    find_nginx || die "nginx is still not on PATH after installing it"
fi

# --- torsion
if [[ " $SERVERS " == *" torsion "* ]]; then
    log "building the torsion runner (target dir $TARGET)"
    (cd "$ROOT" && cargo build --release -p torsion-cli)
fi

# --- the file
mkdir -p "$WWW"
log "writing $SIZE_MIB MiB of random bytes to $WWW/$FILE_NAME"
head -c "$SIZE" /dev/urandom >"$WWW/$FILE_NAME"
[[ "$(stat -c %s "$WWW/$FILE_NAME")" == "$SIZE" ]] || die "could not write the file"

# --- the servers: started once each; PIDS[name] is the process to measure
declare -A PORTS PIDS
log "results and server logs in $RESULTS_DIR"

start_nginx() {
    local conf="$RESULTS_DIR/nginx" port_on port_off worker=""
    mkdir -p "$conf/tmp"
    port_on="$(free_port)"
    port_off="$(free_port)"
    [[ "$port_on" != "$port_off" ]] || port_off="$(free_port)"
    cat >"$conf/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
user $(id -un) $(id -gn);
pid $conf/nginx.pid;
error_log $conf/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $conf/tmp/body;
    proxy_temp_path $conf/tmp/proxy;
    fastcgi_temp_path $conf/tmp/fastcgi;
    uwsgi_temp_path $conf/tmp/uwsgi;
    scgi_temp_path $conf/tmp/scgi;
    # As Debian's /etc/nginx/nginx.conf.
    sendfile on;
    tcp_nopush on;
    server { listen 127.0.0.1:$port_on; root $WWW; }
    server { listen 127.0.0.1:$port_off; root $WWW; sendfile off; }
}
EOF
    start_server nginx "$port_on" "$NGINX" -p "$conf/" -e "$conf/error.log" -c "$conf/nginx.conf"
    wait_listening nginx "$SERVER_PID" "$port_off"
    for _ in $(seq 100); do
        worker="$(pgrep -P "$SERVER_PID" || true)"
        [[ -n "$worker" ]] && break
        sleep 0.05
    done
    [[ -n "$worker" && "$worker" != *[!0-9]* ]] || die "cannot find nginx's one worker process"
    PORTS[nginx]=$port_on
    PORTS[nginx-nosendfile]=$port_off
    PIDS[nginx]=$worker
    PIDS[nginx-nosendfile]=$worker
}

# start_torsion NAME BINARY
start_torsion() {
    local port
    [[ -x "$2" ]] || die "$2 is missing"
    port="$(free_port)"
    start_server "$1" "$port" "$2" --log-format text \
        web --listen "tcp:$port:interface=127.0.0.1" --path "$WWW"
    PORTS[$1]=$port
    PIDS[$1]=$SERVER_PID
}

active=()
for server in $SERVERS; do
    case "$server" in
    nginx | nginx-nosendfile)
        [[ -n "${PIDS[nginx]:-}" ]] || start_nginx
        ;;
    torsion) start_torsion torsion "$TORSION" ;;
    torsion-baseline) start_torsion torsion-baseline "${TORSION_BASELINE:?set TORSION_BASELINE to a torsion binary}" ;;
    *) die "unknown server $server" ;;
    esac
    active+=("$server")
done

url() { printf 'http://127.0.0.1:%s/%s' "${PORTS[$1]}" "$FILE_NAME"; }

# memory_field SERVER WHEN: the measured process's VmHWM now, as "WHEN_kb":N.
memory_field() { printf '"%s_kb":%s' "$2" "$(vm_kb "${PIDS[$1]}" VmHWM)"; }
declare -A MEMORY
for server in "${active[@]}"; do
    MEMORY[$server]="$(memory_field "$server" start)"
done

# --- warm-up: one checked download from each server (the page cache, the servers' memory)
for server in "${active[@]}"; do
    log "checking $server's copy"
    taskset -c "$CLIENT_CPUS" curl -sf "$(url "$server")" | cmp -s - "$WWW/$FILE_NAME" ||
        die "$server served a different file"
done

# download SERVER OUTFILE: one download to /dev/null; curl's figures into OUTFILE.
download() {
    taskset -c "$CLIENT_CPUS" curl -s -o /dev/null \
        -w '%{http_code} %{size_download} %{time_total} %{speed_download}\n' "$(url "$1")" >"$2" ||
        echo "failed 0 0 0" >"$2"
}

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- single downloads, the order rotated every round
n=${#active[@]}
for round in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
        server="${active[$(((i + round - 1) % n))]}"
        pid="${PIDS[$server]}"
        t0="$(cpu_ticks "$pid")"
        download "$server" "$RESULTS_DIR/curl.out"
        t1="$(cpu_ticks "$pid")"
        read -r code bytes seconds speed <"$RESULTS_DIR/curl.out"
        if [[ "$code" == 200 && "$bytes" == "$SIZE" ]]; then
            record "$server" single "\"round\":$round,\"bytes\":$bytes,\"seconds\":$seconds,\"speed\":$speed,\"cpu_s\":$(ticks_seconds "$t0" "$t1")"
            log "$server round $round: $(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }') MB/s"
        else
            record "$server" single "\"round\":$round,\"error\":\"status $code, $bytes bytes\""
            log "$server round $round: FAILED (status $code, $bytes bytes)"
        fi
    done
done
for server in "${active[@]}"; do
    MEMORY[$server]+=",$(memory_field "$server" single)"
done

# --- concurrent downloads
for round in $(seq "$CONC_ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
        server="${active[$(((i + round - 1) % n))]}"
        pid="${PIDS[$server]}"
        clients=()
        t0="$(cpu_ticks "$pid")"
        start="$(date +%s.%N)"
        for c in $(seq "$CONCURRENCY"); do
            download "$server" "$RESULTS_DIR/curl.$c.out" &
            clients+=($!)
        done
        wait "${clients[@]}"
        end="$(date +%s.%N)"
        t1="$(cpu_ticks "$pid")"
        total=0
        failed=0
        for c in $(seq "$CONCURRENCY"); do
            read -r code bytes _ <"$RESULTS_DIR/curl.$c.out"
            if [[ "$code" == 200 && "$bytes" == "$SIZE" ]]; then
                total=$((total + bytes))
            else
                failed=$((failed + 1))
            fi
        done
        seconds="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')"
        record "$server" concurrent "\"round\":$round,\"clients\":$CONCURRENCY,\"failed\":$failed,\"bytes\":$total,\"seconds\":$seconds,\"speed\":$(awk -v b="$total" -v s="$seconds" 'BEGIN { printf "%.0f", b / s }'),\"cpu_s\":$(ticks_seconds "$t0" "$t1")"
        log "$server concurrent round $round: $(awk -v b="$total" -v s="$seconds" 'BEGIN { printf "%.0f", b / s / 1e6 }') MB/s in all, $failed failed"
    done
done
if [[ "$CONC_ROUNDS" -gt 0 ]]; then
    for server in "${active[@]}"; do
        MEMORY[$server]+=",$(memory_field "$server" concurrent)"
    done
fi
for server in "${active[@]}"; do
    record "$server" memory "${MEMORY[$server]}"
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- the report
report() {
    report_python "$RESULTS" <<'PY'
median = statistics.median
GIB = 1 << 30
size_mib = int(env["SIZE_MIB"])
conc = env["CONCURRENCY"]

def ok(server, case):
    return [r for r in rows if r["server"] == server and r["case"] == case and "error" not in r]

def speeds(server, case):
    return [r["speed"] / 1e6 for r in ok(server, case)]

def cpu_per_gib(server, case):
    xs = [r["cpu_s"] / (r["bytes"] / GIB) for r in ok(server, case) if r["bytes"]]
    return median(xs) if xs else None

def paired(server, base, case):
    """The median over rounds of SERVER's speed over BASE's in the same round."""
    by_round = {r["round"]: r["speed"] for r in ok(base, case)}
    xs = [r["speed"] / by_round[r["round"]] for r in ok(server, case) if by_round.get(r["round"])]
    return f"{median(xs):.2f}" if xs else "–"

print(f"Static files, {machine()}; a {size_mib} MiB file of random bytes from the page cache, "
      f"curl to /dev/null; servers on CPU {env['SERVER_CPUS']}, curl on CPU {env['CLIENT_CPUS']}; "
      f"{env['NGINX_VERSION']}; {env['CURL_VERSION']}; load average {env['LOAD_START']} "
      f"before the downloads, {env['LOAD_END']} after.")
print()
table(["case", "server", "downloads", "median MB/s", "min–max MB/s", "÷ nginx (medians)",
       "÷ nginx (paired)", "server CPU s/GiB", "server CPU"])
labels = {"single": "one download", "concurrent": f"{conc} at once (total)"}
for case in ("single", "concurrent"):
    base = speeds("nginx", case)
    for server in servers:
        xs = speeds(server, case)
        failed = [r for r in rows if r["server"] == server and r["case"] == case
                  and ("error" in r or r.get("failed"))]
        if not xs and not failed:
            continue
        note = f" ({len(failed)} failed)" if failed else ""
        if not xs:
            print(f"| {labels[case]} | {server} | failed{note} |||||||")
            continue
        util = median([r["cpu_s"] / r["seconds"] for r in ok(server, case) if r["seconds"]])
        print(f"| {labels[case]} | {server} | {len(xs)}{note} | {fmt(median(xs), 0)} "
              f"| {fmt(min(xs), 0)}–{fmt(max(xs), 0)} "
              f"| {ratio(median(xs), median(base) if base else None)} "
              f"| {paired(server, 'nginx', case) if base else '–'} "
              f"| {fmt(cpu_per_gib(server, case), 2)} | {pct(util)} |")
print()
table(["peak RSS (VmHWM)", "at start", "after the single downloads", "after the concurrent ones"], left=1)
seen = set()
for server in servers:
    r = get(server, "memory")
    # Both nginx rows are the same worker.
    name = "nginx (worker)" if server.startswith("nginx") else server
    if r is None or name in seen:
        continue
    seen.add(name)
    cell = lambda k: f"{r[k] / 1024:.1f} MiB" if k in r else "–"
    print(f"| {name} | {cell('start_kb')} | {cell('single_kb')} | {cell('concurrent_kb')} |")
print()
print("MB/s: 10^6 bytes per second, curl's %{speed_download} for one download, all bytes over "
      "the round's wall time for the concurrent case; ÷ nginx: against nginx with sendfile on, "
      "of the medians, and the median of the per-round ratios; server CPU s/GiB: the serving "
      "process's utime+stime over the download(s) per GiB sent (median); server CPU: its share "
      "of one core over the download(s). nginx's figures are its one worker's, which serves "
      "both nginx ports.")
PY
}
NGINX_VERSION="$( ("${NGINX:-nginx}" -v 2>&1 || echo "nginx not run") | head -n 1)"
CURL_VERSION="$(curl --version | head -n 1 | awk '{ print $1, $2 }')"
export SIZE_MIB CONCURRENCY SERVER_CPUS CLIENT_CPUS NGINX_VERSION CURL_VERSION LOAD_START LOAD_END
write_report report
log "raw results: $RESULTS"
