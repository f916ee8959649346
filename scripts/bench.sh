#!/usr/bin/env bash
# `make bench`: measures the whole cluster and its hot paths on this machine
# and writes BENCH.md.
#
#   1. builds bin/, starts `bin/adclick dev` (fresh temp data dir, free ports),
#   2. `adclick load` as fast as it can for $BENCH_DURATION, verified,
#      then the cluster's RSS (VmRSS, VmHWM from /proc/<pid>/status),
#   3. `adclick load --rate $BENCH_RATE` for $BENCH_DURATION, verified,
#   4. a skewed load (`--zipf 2 --ads 100000`: one ad carries ~60% of the
#      clicks) on a fresh cluster with hot-ad splitting off (--hot-min-rate
#      1e12), then on one with it on, side by side: each cluster first runs
#      the load for $BENCH_SKEW_WARMUP (detection, then the grant's Lead of
#      2-3 minutes), then the measured $BENCH_SKEW_DURATION,
#   5. stops the cluster, runs the Go benchmarks of the hot-path packages
#      ($BENCH_COUNT times) and summarizes them with benchstat (medians).
#
# Knobs (environment): BENCH_DURATION (180s), BENCH_RATE (50000),
# BENCH_COUNT (5), BENCH_OUT (BENCH.md), BENCH_LOAD_FLAGS (extra load flags),
# BENCH_SKEW_WARMUP (3m), BENCH_SKEW_DURATION (3m), BENCH_SKEW=0 skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-180s}  # at least 3 minute boundaries: closing a minute is where work peaks
RATE=${BENCH_RATE:-50000}
COUNT=${BENCH_COUNT:-5}
OUT=${BENCH_OUT:-BENCH.md}
LOAD_FLAGS=${BENCH_LOAD_FLAGS:-}
SKEW=${BENCH_SKEW:-1}
SKEW_WARMUP=${BENCH_SKEW_WARMUP:-3m}
SKEW_DURATION=${BENCH_SKEW_DURATION:-3m}
SKEW_FLAGS="--zipf 2 --ads 100000"
BENCHSTAT=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
GO=${GO:-go}

work=$(mktemp -d)
dev_pid=
cleanup() {
	if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
		kill -TERM "$dev_pid" 2>/dev/null || true
		wait "$dev_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT


echo "== build"
mkdir -p bin
$GO build -o bin/ ./cmd/router ./cmd/aggregator ./cmd/reducer ./cmd/adclick

start_dev() { # data dir name, extra dev flags...
	local data=$1; shift
	# Port 0 everywhere, the router's address read back from the log: a
	# port picked free beforehand can be taken before dev binds it.
	dev_cmd="bin/adclick dev --data-dir $work/$data --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --etcd-addr 127.0.0.1:0${*:+ $*}"
	echo "== start: $dev_cmd"
	$dev_cmd >"$work/$data.log" 2>&1 &
	dev_pid=$!
	for _ in $(seq 1 300); do
		grep -q "cluster running" "$work/$data.log" && break
		kill -0 "$dev_pid" 2>/dev/null || { cat "$work/$data.log"; echo "adclick dev exited"; exit 1; }
		sleep 0.2
	done
	grep -q "cluster running" "$work/$data.log" || { cat "$work/$data.log"; echo "adclick dev did not start in 60 s"; exit 1; }
	target=$(awk '$1 == "router" && $2 == "gRPC" {print $3; exit}' "$work/$data.log")
}
stop_dev() {
	echo "== stop cluster"
	kill -TERM "$dev_pid"
	wait "$dev_pid" || true
	dev_pid=
}

start_dev data
base_dev_cmd=$dev_cmd

load() { # name, flags...
	local name=$1; shift
	echo "== load $name: bin/adclick load --target $target $* $LOAD_FLAGS"
	local rc=0
	# shellcheck disable=SC2086
	bin/adclick load --target "$target" --series "$work/$name.csv" --verify-timeout 600s "$@" $LOAD_FLAGS >"$work/$name.json" 2> >(tee "$work/$name.err" >&2) || rc=$?
	tail -n1 "$work/$name.json"
	# Every second of the run, drawn for BENCH.md: a stall shows as a dip.
	mkdir -p bench
	[ -s "$work/$name.csv" ] && $GO run ./scripts/benchplot -title "adclick load: $name ($*)" -o "bench/$name.png" "$work/$name.csv" || true
	[ "$rc" = 0 ] || echo "load $name: exit code $rc (not verified)"
	return 0
}

full_cmd="bin/adclick load --target $target --duration $DURATION${LOAD_FLAGS:+ $LOAD_FLAGS}"
load full --duration "$DURATION"
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$dev_pid/status")
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$dev_pid/status")
echo "== adclick dev RSS after the full-speed run: $((rss_kb / 1024)) MiB (peak $((hwm_kb / 1024)) MiB)"

rate_cmd="bin/adclick load --target $target --duration $DURATION --rate $RATE${LOAD_FLAGS:+ $LOAD_FLAGS}"
load rate --duration "$DURATION" --rate "$RATE"
stop_dev

skew_cmd="bin/adclick load --target \$target --duration $SKEW_DURATION $SKEW_FLAGS"
if [ "$SKEW" != 0 ]; then
	for mode in nosplit split; do
		flags=""
		[ "$mode" = nosplit ] && flags="--hot-min-rate 1e12"
		start_dev "data-$mode" $flags
		# shellcheck disable=SC2086
		load "warm-$mode" --duration "$SKEW_WARMUP" --verify=false $SKEW_FLAGS
		# shellcheck disable=SC2086
		load "skew-$mode" --duration "$SKEW_DURATION" $SKEW_FLAGS
		grep -c '"hot ad: grant taken"' "$work/data-$mode.log" >"$work/grants-$mode" || true
		stop_dev
	done
fi

pkgs=()
for p in event ring router aggregator dedup window hotad reducer store topn wal; do
	[ -d "pkg/$p" ] && pkgs+=("./pkg/$p")
done
bench_cmd="$GO test -run '^\$' -bench . -benchmem -count $COUNT ${pkgs[*]}"
echo "== $bench_cmd"
$GO test -run '^$' -bench . -benchmem -count "$COUNT" "${pkgs[@]}" | tee "$work/gobench.txt"
cp "$work/gobench.txt" "$work/bench"  # benchstat names the column after the file
echo "== benchstat"
(cd "$work" && $GO run "$BENCHSTAT" bench) | tee "$work/benchstat.txt"

# --- BENCH.md ---------------------------------------------------------------
j() { jq -r "$1" "$work/$2.json" 2>/dev/null | tail -n1; }
row() { # name
	local f=$1
	if ! jq -e . "$work/$f.json" >/dev/null 2>&1; then echo "| (no result) | | | | | | | | |"; return; fi
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"$(j '.events' "$f")" "$(j '.seconds' "$f")" "$(j '.events_per_sec | floor' "$f")" \
		"$(j '"\(.per_sec_min | floor) / \(.per_sec_median | floor) / \(.seconds_below_half_median)"' "$f")" \
		"$(j '.ack_p50_ms' "$f")" "$(j '.ack_p99_ms' "$f")" \
		"$(j '"\(.duplicates_sent) / \(.late_sent)"' "$f")" "$(j '"\(.verified) (\(.mismatches) mismatches, \(.errors) errors)"' "$f")" \
		"$(j '"\(.ads_checked) ads, \(.samples_checked) samples, \(.verify_seconds) s"' "$f")"
}
commit=unknown
if [ -f .git/HEAD ]; then
	head=$(cat .git/HEAD)
	case $head in
	ref:*) ref=${head#ref: }
		if [ -f ".git/$ref" ]; then commit=$(cat ".git/$ref")
		elif [ -f .git/packed-refs ]; then commit=$(awk -v r="$ref" '$2 == r {print $1}' .git/packed-refs); fi ;;
	*) commit=$head ;;
	esac
fi
{
	echo "# Benchmark results"
	echo
	echo "Written by \`make bench\` (scripts/bench.sh). Re-run it to refresh; numbers depend on the machine and on"
	echo "what else runs on it."
	echo
	echo "| | |"
	echo "| --- | --- |"
	echo "| date | $(date -u +%Y-%m-%dT%H:%M:%SZ) |"
	echo "| machine | $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo) |"
	echo "| go | $($GO version | cut -d' ' -f3-) |"
	echo "| commit | \`$commit\` (plus any uncommitted changes) |"
	echo "| cluster | \`$base_dev_cmd\` (router, 2 aggregators, 1 reducer, embedded etcd: one process, durability and dedup on) |"
	echo
	echo "## End to end: \`adclick load\` against \`adclick dev\`"
	echo
	echo "The load generator runs on the same machine and shares its cores with the cluster. Every run is"
	echo "verified: after its minutes close, the count of every ad it sent, random (ad, minute) pairs and the"
	echo "top 100 are compared with its own exact bookkeeping."
	echo
	echo "| run | events | seconds | events/s | per second after 5 s: min / median / seconds below half the median | ack p50 ms | ack p99 ms (whole run) | duplicates / late sent | verified | checked |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	echo "| full speed: \`$full_cmd\` |$(row full | cut -c2-)"
	echo "| paced: \`$rate_cmd\` |$(row rate | cut -c2-)"
	echo
	echo "Memory of the \`adclick dev\` process after the full-speed run (from /proc/<pid>/status):"
	echo "VmRSS $((rss_kb / 1024)) MiB, peak (VmHWM) $((hwm_kb / 1024)) MiB."
	echo
	echo "Every second of both runs (acknowledged clicks per second, and the ack p99 of that second):"
	echo
	echo "![full speed](bench/full.png)"
	echo
	echo "![paced](bench/rate.png)"
	echo
	if [ "$SKEW" != 0 ]; then
		echo "### Skewed load: hot-ad splitting off and on"
		echo
		echo "\`$skew_cmd\` ($SKEW_FLAGS: the top ad carries ~60% of the clicks), each on a fresh cluster after"
		echo "a $SKEW_WARMUP warm-up of the same load (a grant takes effect 2-3 minutes after the ad turns hot)."
		echo "Off: \`adclick dev --hot-min-rate 1e12\`; on: the defaults (with 2 aggregators the fan-out is 2)."
		echo
		echo "| splitting | grants taken | events | seconds | events/s | per second: min / median / below half | ack p50 ms | ack p99 ms | duplicates / late sent | verified | checked |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		echo "| off |$(cat "$work/grants-nosplit" 2>/dev/null) |$(row skew-nosplit | cut -c2-)"
		echo "| on |$(cat "$work/grants-split" 2>/dev/null) |$(row skew-split | cut -c2-)"
		echo
	fi
	echo "Final JSON lines:"
	echo
	echo '```'
	tail -n1 "$work/full.json" 2>/dev/null || true
	tail -n1 "$work/rate.json" 2>/dev/null || true
	echo '```'
	echo
	echo "## Go benchmarks of the hot paths"
	echo
	echo "\`$bench_cmd\`, summarized with \`go run $BENCHSTAT\` (median of $COUNT runs; benchstat gives a confidence interval from 6 runs on, BENCH_COUNT=6):"
	echo
	echo '```'
	cat "$work/benchstat.txt"
	echo '```'
} >"$OUT"
echo "== wrote $OUT"
