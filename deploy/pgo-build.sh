#!/usr/bin/env bash
# Builds the shipped phasegate binary with profile-guided optimization (PGO):
#   1. an instrumented build of the production profile (release + fat LTO),
#   2. a short training run of it under the load bench's own traffic (HTTP/1.1 and HTTP/2
#      keep-alive, full TLS 1.3 handshakes with a client certificate, unary gRPC; routes in
#      off, audit and enforce), one round of each,
#   3. the production build again, laid out by that profile.
# The result is target/pgo/phasegate. Kept-alive requests cost ~12 % less CPU than the plain
# production build (benches/load/README.md, "Profile-guided build"); behaviour is the same
# code, so the test suite (debug builds) is not run against it.
#
# Needs what benches/load/run.sh needs for those scenarios (nginx as the backend, openssl,
# taskset; installed with apt when run as root) and the toolchain's llvm-profdata (rustup
# component llvm-tools, added when missing). ~20 minutes on 2 cores from cold.
# Environment: CARGO_TARGET_DIR, TRAINING_SECONDS=3 (per scenario and mode).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PGO=$TARGET_DIR/pgo
TRAINING_SECONDS=${TRAINING_SECONDS:-3}

log() { printf 'pgo-build: %s\n' "$*" >&2; }

# The profile format follows the LLVM inside rustc, so the merge uses the toolchain's own tool.
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    log "adding the llvm-tools component (llvm-profdata) ..."
    rustup component add llvm-tools >&2
fi
[[ -x $profdata ]] || {
    log "no $profdata"
    exit 1
}

# The load generator and the gRPC backend drive the training; they are not profiled.
log "building loadgen and grpc_backend (release) ..."
cargo build --release --locked --example loadgen --example grpc_backend >&2

log "building the instrumented phasegate ..."
rm -rf "$PGO/raw"
RUSTFLAGS="-Cprofile-generate=$PGO/raw" cargo build --profile production --locked --bin phasegate \
    --target-dir "$PGO/instrumented" >&2

# The proxy and the client each get a core of those this process may use (a container's
# cpuset need not start at 0); on one core they share it.
cpus=()
IFS=, read -r -a ranges <<<"$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)"
for r in "${ranges[@]}"; do
    IFS=- read -r first last <<<"$r"
    for ((c = first; c <= ${last:-$first}; c++)); do cpus+=("$c"); done
done
proxy_cpu=${cpus[0]:-0}
client_cpu=${cpus[1]:-$proxy_cpu}

log "training: the load bench's scenarios, one ${TRAINING_SECONDS}s round each (log: $PGO/training.log) ..."
PHASEGATE=$PGO/instrumented/production/phasegate SKIP_BUILD=1 ROUNDS=1 DURATION=$TRAINING_SECONDS WARMUP=1 \
    ROUND_WARMUP=0 QUIET_WAIT=0 RETRIES=0 PROXY_CPU=$proxy_cpu CLIENT_CPU=$client_cpu \
    TARGETS="backend pg-off pg-audit pg-enforce" SCENARIOS="keepalive h2 handshake grpc" \
    "$ROOT/benches/load/run.sh" >"$PGO/training.log" 2>&1 || {
    tail -n 30 "$PGO/training.log" >&2
    log "the training run failed"
    exit 1
}
# Every phasegate process writes its counts when it exits; the bench stops them all.
shopt -s nullglob
raw=("$PGO"/raw/*.profraw)
((${#raw[@]})) || {
    log "the training run left no profile in $PGO/raw"
    exit 1
}
"$profdata" merge -o "$PGO/phasegate.profdata" "${raw[@]}"

log "building phasegate with the profile ..."
RUSTFLAGS="-Cprofile-use=$PGO/phasegate.profdata" cargo build --profile production --locked --bin phasegate \
    --target-dir "$PGO/optimized" >&2
cp "$PGO/optimized/production/phasegate" "$PGO/phasegate"
log "done: $PGO/phasegate"
