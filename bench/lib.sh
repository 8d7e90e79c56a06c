# shellcheck shell=bash disable=SC2034 # sets variables for the script that sources it
# bench/lib.sh: what the macro benchmarks (bench/http.sh, ws.sh, hub.sh) share;
# sourced by them (bash), never run. Set BENCH_NAME (the log prefix) first.
#
#   logging        log MESSAGE                   "BENCH_NAME: MESSAGE" on stderr
#   output         bench_outputs DIR EXT -> stamp, results, summary; bench_table_mode "$@"
#   pinning        bench_pin SERVER_CPU CLIENT_CPU -> ncpu, pin_server=(), pin_client=()
#   the machine    bench_check_load WHAT         -> load_start; warns when busy
#                  bench_raise_fd_limit NEEDED WHAT
#   servers        port_open PORT, bench_port_free NAME PORT KNOB,
#                  bench_wait_listen NAME PID PORT LOG, bench_stop_pid PID [TRIES],
#                  bench_stop_all (the servers in PID[name]),
#                  peer_available NAME, start_peer NAME PORT LOG MAX_CLIENTS NATS_PORT
#   /proc          cpu_ticks PID, rss_kb PID (the process and its descendants),
#                  wait_ms PID, load1
#   the client     bench_wsload DEFAULT_BINARY FALLBACK_DIR -> WSLOAD;
#                  wsload_result LOG RC -> W_LINE; wsload_summary LOG PATTERN
#   tables         median (values on stdin); BENCH_AWK: awk functions field, median,
#                  add, fmt, ratio
#
# Everything listens and connects on 127.0.0.1; servers are stopped by PID.
# A new benchmark starts from these rather than from a copy of another script.

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }

CLK_TCK=$(getconf CLK_TCK)

# ---- output -----------------------------------------------------------------------
bench_outputs() { # dir ext -> stamp, results (dir/results-STAMP.ext, empty), summary; dir/logs
    mkdir -p "$1/logs"
    stamp=$(date +%Y%m%d-%H%M%S)
    results="$1/results-$stamp.$2"
    summary="$1/summary-$stamp.txt"
    : >"$results"
}

# `SCRIPT --table FILE...`: print the tables again from results files (paths as
# given where the script was started, $orig_pwd) with the script's print_table.
bench_table_mode() { # "$@" of the script; exits after the tables
    [[ "${1:-}" == --table ]] || return 0
    shift
    # shellcheck disable=SC2154 # orig_pwd is the script's
    cd "$orig_pwd" || exit 2
    print_table "$@"
    exit 0
}

# ---- CPU pinning and the machine ---------------------------------------------------
bench_pin() { # server_cpu client_cpu -> ncpu, pin_server, pin_client (empty: not pinned)
    ncpu=$(nproc 2>/dev/null || echo 1)
    pin_server=() pin_client=()
    if command -v taskset >/dev/null && ((ncpu > $1 && ncpu > $2)) && [[ "$1" != "$2" ]]; then
        pin_server=(taskset -c "$1")
        pin_client=(taskset -c "$2")
    else
        log "warning: not pinning (need taskset and two distinct CPUs; have $ncpu)"
    fi
}

load1() { local l _; read -r l _ </proc/loadavg; echo "$l"; }

bench_check_load() { # what_is_noisy -> load_start (1-min load average); warns above 0.5
    load_start=$(load1)
    if awk -v l="$load_start" 'BEGIN { exit !(l > 0.5) }'; then
        log "warning: load average $load_start on $ncpu CPU(s) before starting: other processes compete"
        log "         for the CPUs; $1 will be noisy (per-server-CPU-s figures less so)"
    fi
}

# The soft fd limit up to the hard one; a warning when it stays below needed + 64.
bench_raise_fd_limit() { # needed (0: no check) what_is_invalid
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    if (($1 > 0 && $(ulimit -n) < $1 + 64)); then
        log "warning: fd limit $(ulimit -n) is below $(($1 + 64)); $2 will be invalid"
    fi
}

# ---- servers ----------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

bench_port_free() { # name port knob -> 1 (logged) if something listens there already
    if port_open "$2"; then
        log "port $2 is already in use; cannot start $1 (set $3)"
        return 1
    fi
}

# 0 once the server accepts connections on port (within 10 s); 1, logged, when it
# exited first or did not listen in time (the caller stops it).
bench_wait_listen() { # name pid port logfile
    local k
    for ((k = 0; k < 100; k++)); do
        if ! kill -0 "$2" 2>/dev/null; then
            log "$1 exited at start; see $4"
            return 1
        fi
        port_open "$3" && return 0
        sleep 0.1
    done
    log "$1 did not listen on $3 within 10 s; see $4"
    return 1
}

# SIGTERM, up to tries x 0.1 s for the process to exit, then SIGKILL; reaped.
bench_stop_pid() { # pid [tries, default 50]
    local k
    kill -TERM "$1" 2>/dev/null || true
    for ((k = 0; k < ${2:-50}; k++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The reference servers of ws.sh and hub.sh.
peer_available() { # name -> 0 if it can run here, else prints why
    case $1 in
    nats) command -v nats-server >/dev/null || { echo "nats-server not installed"; return 1; } ;;
    redis) command -v redis-server >/dev/null || { echo "redis-server not installed"; return 1; } ;;
    *) echo "unknown server"; return 1 ;;
    esac
}

# In the background, pinned to the server CPU ($! is its PID afterwards).
start_peer() { # name port logfile max_clients nats_client_port
    case $1 in
    nats)
        WL_NATS_PORT=$5 WL_NATS_WS_PORT=$2 \
            "${pin_server[@]}" nats-server -c bench/peers/nats.conf >"$3" 2>&1 &
        ;;
    redis)
        # --protected-mode no: wsload connects from 127.0.0.2.. (see docs/bench-ws.md).
        "${pin_server[@]}" redis-server --port "$2" --bind 127.0.0.1 --protected-mode no \
            --save '' --appendonly no --maxclients $(($4 + 100)) \
            --logfile '' >"$3" 2>&1 &
        ;;
    esac
}

# Scripts that keep several servers running at once hold them in PID[name]:
# SIGTERM to all first, then each is waited for (bench_stop_pid) and forgotten.
bench_stop_all() {
    local s
    for s in "${!PID[@]}"; do kill -TERM "${PID[$s]}" 2>/dev/null || true; done
    for s in "${!PID[@]}"; do
        bench_stop_pid "${PID[$s]}"
        unset "PID[$s]"
    done
}

# ---- /proc sampling -----------------------------------------------------------------
# /proc/PID/task/*/children needs CONFIG_PROC_CHILDREN, which not every kernel
# has: find descendants by the parent pid in every /proc/N/stat instead.
tree_pids() { # pid -> pid and all its descendants
    local f line rest
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue # gone meanwhile
        rest=${line##*) } # the command name may hold spaces and parentheses
        f=${f#/proc/}
        echo "${f%/stat} ${rest#* }"
    done | awk -v root="$1" '{ split($2, a, " "); parent[$1] = a[1] }
        END {
            keep[root] = 1; print root
            do { more = 0
                for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; more = 1 }
            } while (more)
        }'
}
cpu_ticks() { # utime+stime of the process tree (all threads), in clock ticks
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
rss_kb() { # VmRSS of the process tree, kB
    local t=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' /proc/"$p"/status 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
wait_ms() { # time the process's threads spent runnable but waiting for a CPU, in ms
    local f wait sum=0
    for f in /proc/"$1"/task/*/schedstat; do
        read -r _ wait _ <"$f" 2>/dev/null || continue
        sum=$((sum + wait))
    done
    echo $((sum / 1000000))
}

# ---- the client: bench/wsload -------------------------------------------------------
wsload_stale() { # binary: true if missing or older than any source
    [[ -x "$1" ]] || return 0
    local f
    for f in bench/wsload/*.c bench/wsload/*.h; do
        [[ "$f" -nt "$1" ]] && return 0
    done
    return 1
}

# WSLOAD, unless set: the build's binary, else one built in fallback_dir from the
# sources when the build's is missing or older than them.
bench_wsload() { # default_binary fallback_dir
    [[ -z "$WSLOAD" ]] || return 0
    WSLOAD=$1
    wsload_stale "$WSLOAD" || return 0
    WSLOAD="$2/wsload"
    if wsload_stale "$WSLOAD"; then
        log "building $WSLOAD"
        "${CC:-cc}" -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra bench/wsload/*.c \
            -lpthread -lm -o "$WSLOAD"
    fi
}

# W_LINE: the RESULT object of a wsload run, without its opening brace
# ("key":value,...}), made "valid":false when wsload exited non-zero (rc): a run
# that did not end cleanly does not count, whatever its line says. Returns 1,
# logged, when the run printed no RESULT line.
wsload_result() { # logfile rc
    W_LINE=$(grep '^RESULT ' "$1" | tail -n 1 || true)
    if [[ -z $W_LINE ]]; then
        log "  no RESULT (exit $2); see $1"
        return 1
    fi
    (($2 == 0)) || W_LINE=${W_LINE/\"valid\":true/\"valid\":false}
    W_LINE=${W_LINE#RESULT \{}
}

wsload_summary() { # logfile pattern: wsload's summary lines matching, indented, on stderr
    grep -E "^  ($2)" "$1" | sed 's/^/    /' >&2 || true
}

# ---- tables -----------------------------------------------------------------------------
median() { # values on stdin (nan ignored) -> median, or nan
    { grep -v nan || true; } | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}


# awk functions for tables over results-*.jsonl, one flat JSON object per run:
# field(line, key), median("v1 v2 ..."), add(key, v) appends to vals[key],
# fmt(x, f) and ratio(x, base) ("-" when empty). Use: awk "$BENCH_AWK"'{ ... }'.
BENCH_AWK='
    function field(line, key,    m) {
        if (match(line, "\"" key "\":(\"[^\"]*\"|[^,}]*)")) {
            m = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
            gsub(/"/, "", m)
            return m
        }
        return ""
    }
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        if (n == 0) return ""
        for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(k, v) { if (v != "" && v != "null") vals[k] = vals[k] (vals[k] == "" ? "" : " ") v }
    function fmt(x, f) { return x == "" ? "-" : sprintf(f, x) }
    function ratio(x, b) { return (x == "" || b == "" || b == 0) ? "-" : sprintf("%.2fx", x / b) }
'
