#!/usr/bin/env bash
# scale.sh: what one netstack member costs as its book grows. For each
# size N, bench/genbook writes a book of N members: this node (m0, with an
# endpoint), half the others offline with endpoints on loopback addresses
# nobody listens on (127.X.Y.Z:9), half with no endpoint. One
# `wgmesh up --mode netstack` runs it, alone, and the script prints:
#
#   ready     seconds from the process start to its "ready" log line
#   RSS       VmRSS after the idle window, and per member
#   start CPU utime+stime (/proc/PID/stat) from ready until SETTLE seconds
#             later, as % of one core: the start-up greetings and
#             WireGuard's retries to the offline members, until they go
#             idle (30 s without an answer)
#   idle CPU  the same over WINDOW seconds after that
#   status    latency of one `wgmesh status --json` (into a file; the jq
#             that reads it is not timed) while idle, and how
#             many members it shows idle (out of the device: lazy peers)
#   apply     seconds from renaming a changed book (serial 2, every fourth
#             endpoint moved) over the watched file to status showing
#             serial 2, and the slowest `wgmesh status` answer meanwhile
#             (they are asked back to back)
#
# With WGMESH_BEFORE=PATH the same runs alternate with an older binary, so
# both builds meet the same load: medians and after/before ratios.
#
# Usage (no root):  bash bench/scale.sh
# Environment:
#   SIZES="100 1000 5000 10000"   book sizes
#   ROUNDS=1       alternations per size
#   SETTLE=40      seconds between ready and the idle window
#   WINDOW=10      seconds of the idle window
#   WGMESH=PATH, WGMESH_BEFORE=PATH   prebuilt binaries
#   KEEP_LOGS=1    keep the temporary directory

set -Eeuo pipefail

SIZES=${SIZES:-100 1000 5000 10000}
ROUNDS=${ROUNDS:-1}
SETTLE=${SETTLE:-40}
WINDOW=${WINDOW:-10}

die() { echo "scale: $*" >&2; exit 1; }

for v in ROUNDS SETTLE WINDOW; do
	[[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} <= 600)) || die "$v=${!v}: want 0..600"
done
((ROUNDS >= 1 && WINDOW >= 1)) || die "ROUNDS and WINDOW must be at least 1"
for n in $SIZES; do
	[[ $n =~ ^[0-9]+$ ]] && ((n >= 2 && n <= 60000)) || die "SIZES: bad size $n (2..60000)"
done
for c in go jq awk; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found"
done
if command -v ss >/dev/null 2>&1 && ss -Hlun | awk '{print $4}' | grep -q ':9$'; then
	die "something listens on UDP port 9; the offline members' endpoints would not be offline"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d /tmp/wgmesh-scale.XXXXXX)
PID=
CHILD=

exec 3>&2
cleanup() {
	local rc=$? i
	set +e
	exec 2>&3
	trap - EXIT INT TERM HUP ERR
	[[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null
	if [[ -n $PID ]]; then
		kill -TERM "$PID" 2>/dev/null
		for ((i = 0; i < 50; i++)); do
			kill -0 "$PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$PID" 2>/dev/null
	fi
	if [[ ${KEEP_LOGS:-0} == 1 ]] || ((rc != 0 && rc < 128)); then
		echo "scale: logs kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "scale: line $LINENO failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

waited() {
	local rc=0
	"$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}
now_ns() { date +%s%N; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

umask 077
if [[ -z ${WGMESH:-} ]]; then
	echo "building wgmesh from $REPO" >&2
	waited go build -C "$REPO" -o "$TMP/wgmesh" . || die "go build of wgmesh failed"
	WGMESH=$TMP/wgmesh
fi
waited go build -C "$REPO" -o "$TMP/genbook" ./bench/genbook || die "go build of genbook failed"
BUILDS=(current)
declare -A BIN=([current]=$WGMESH)
if [[ -n ${WGMESH_BEFORE:-} ]]; then
	[[ -x $WGMESH_BEFORE ]] || die "WGMESH_BEFORE=$WGMESH_BEFORE is not executable"
	BUILDS=(before current)
	BIN[before]=$WGMESH_BEFORE
fi
HZ=$(getconf CLK_TCK)

declare -A READY=() RSS=() CPU=() START=() IDLE=() APPLY=() WORST=() LAZY=()

# measure BUILD N: one run of BUILD's binary on the book of N members.
measure() {
	local b=$1 n=$2 bin=${BIN[$1]} dir=$TMP/run i t0 t1 ready=-1 cr c0 c1 rss s0 s1 idle lazy worst=0 calls=0 serial applied=-1
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$TMP/$n/book1.toml" "$dir/book.toml"
: >"$dir/log"
	t0=$(now_ns)
	"$bin" up --book "$dir/book.toml" --key "$TMP/$n/self.key" --listen-port 0 --control "$dir/ctl" \
		--state-dir "$dir/state" --log-level info >"$dir/log" 2>&1 &
	PID=$!
	for ((i = 0; i < 12000; i++)); do
		if grep -q 'msg=ready' "$dir/log"; then
			ready=$(($(now_ns) - t0))
			break
		fi
		kill -0 "$PID" 2>/dev/null || { cat "$dir/log" >&2; die "$b wgmesh up with $n members died"; }
		sleep 0.01
	done
	((ready >= 0)) || die "$b with $n members: not ready after 120 s (log in $dir/log)"
	cr=$(ticks "$PID")
	sleep "$SETTLE"
	c0=$(ticks "$PID")
	sleep "$WINDOW"
	c1=$(ticks "$PID")
	rss=$(rss_kb "$PID")
	s0=$(now_ns)
	# An overloaded machine can make the answer miss the CLI's deadline:
	# that run then shows -1 members idle, and the apply is still measured.
	lazy=-1
	if "$bin" status --json --control "$dir/ctl" >"$dir/status.json"; then
		idle=$(($(now_ns) - s0))
		# Members out of the device (lazy peers; a build without them has none).
		lazy=$(jq '[.peers[] | select(.path == "idle")] | length' "$dir/status.json")
	else
		idle=$(($(now_ns) - s0))
	fi

	cp "$TMP/$n/book2.toml" "$dir/book.toml.new"
	t1=$(now_ns)
	mv "$dir/book.toml.new" "$dir/book.toml"
	for ((i = 0; i < 2000; i++)); do
		# Timed alone, into a file: jq reading 10,000 members takes
		# longer than the answer itself.
		s0=$(now_ns)
		"$bin" status --json --control "$dir/ctl" >"$dir/apply.json" || :
		s1=$(now_ns)
		serial=$(jq -r .book_serial "$dir/apply.json" 2>/dev/null) || serial=0
		calls=$((calls + 1))
		((s1 - s0 > worst)) && worst=$((s1 - s0))
		if [[ $serial == 2 ]]; then
			applied=$((s1 - t1))
			break
		fi
		(($(now_ns) - t1 < 120000000000)) || break
	done
	((applied >= 0)) || die "$b with $n members: the changed book was not applied within 120 s (log in $dir/log)"
	kill -TERM "$PID"
	wait "$PID" 2>/dev/null || true
	PID=

	READY[$b.$n]+="$(awk -v t="$ready" 'BEGIN {printf "%.3f", t / 1e9}') "
	RSS[$b.$n]+="$rss "
	CPU[$b.$n]+="$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v w="$WINDOW" 'BEGIN {printf "%.2f", 100 * t / hz / w}') "
	START[$b.$n]+="$(awk -v t=$((c0 - cr)) -v hz="$HZ" -v w="$SETTLE" 'BEGIN {if (w > 0) printf "%.2f", 100 * t / hz / w; else print 0}') "
	IDLE[$b.$n]+="$(awk -v t="$idle" 'BEGIN {printf "%.1f", t / 1e6}') "
	APPLY[$b.$n]+="$(awk -v t="$applied" 'BEGIN {printf "%.3f", t / 1e9}') "
	WORST[$b.$n]+="$(awk -v t="$worst" 'BEGIN {printf "%.1f", t / 1e6}') "
	LAZY[$b.$n]+="$lazy "
	printf '  %-7s N=%-6d ready %6.3f s  RSS %7.1f MB  start CPU %6.2f %%  idle CPU %6.2f %%  status %6.1f ms  idle members %d  apply %6.3f s, status <= %7.1f ms (%d calls)\n' \
		"$b" "$n" "$(awk -v t="$ready" 'BEGIN {print t / 1e9}')" "$(awk -v r="$rss" 'BEGIN {print r / 1024}')" \
		"$(awk -v t=$((c0 - cr)) -v hz="$HZ" -v w="$SETTLE" 'BEGIN {print (w > 0) ? 100 * t / hz / w : 0}')" \
		"$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v w="$WINDOW" 'BEGIN {print 100 * t / hz / w}')" \
		"$(awk -v t="$idle" 'BEGIN {print t / 1e6}')" "$lazy" "$(awk -v t="$applied" 'BEGIN {print t / 1e9}')" \
		"$(awk -v t="$worst" 'BEGIN {print t / 1e6}')" "$calls"
}

median() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1}
		END {printf "%s\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

echo "one netstack member, half the others offline on loopback; ${SETTLE}s settle (start CPU), ${WINDOW}s idle window; $ROUNDS round(s); $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
for n in $SIZES; do
	mkdir -p "$TMP/$n"
	"$TMP/genbook" -n "$n" -key "$TMP/$n/self.key" -out "$TMP/$n/book1.toml"
	"$TMP/genbook" -n "$n" -out "$TMP/$n/book2.toml" -changed
	echo
	echo "N = $n members:"
	for ((r = 0; r < ROUNDS; r++)); do
		# Rotate the order, so neither build always goes first.
		for ((i = 0; i < ${#BUILDS[@]}; i++)); do
			measure "${BUILDS[$(((i + r) % ${#BUILDS[@]}))]}" "$n"
		done
	done
done

echo
echo "Summary (medians of $ROUNDS round(s)):"
printf '  %-7s %6s %9s %8s %12s %11s %9s %11s %9s %14s %6s\n' build N "ready s" "RSS MB" "KB/member" "start CPU %" "CPU %" "status ms" "apply s" "status max ms" idle
declare -A M=()
for n in $SIZES; do
	for b in "${BUILDS[@]}"; do
		# shellcheck disable=SC2086
		{
			M[$b.$n.ready]=$(median ${READY[$b.$n]})
			M[$b.$n.rss]=$(median ${RSS[$b.$n]})
			M[$b.$n.cpu]=$(median ${CPU[$b.$n]})
			M[$b.$n.start]=$(median ${START[$b.$n]})
			M[$b.$n.idle]=$(median ${IDLE[$b.$n]})
			M[$b.$n.apply]=$(median ${APPLY[$b.$n]})
			M[$b.$n.worst]=$(median ${WORST[$b.$n]})
			M[$b.$n.lazy]=$(median ${LAZY[$b.$n]})
		}
		printf '  %-7s %6d %9.3f %8.1f %12.1f %11.2f %9.2f %11.1f %9.3f %14.1f %6d\n' "$b" "$n" "${M[$b.$n.ready]}" \
			"$(awk -v r="${M[$b.$n.rss]}" 'BEGIN {print r / 1024}')" "$(awk -v r="${M[$b.$n.rss]}" -v n="$n" 'BEGIN {print r / n}')" \
			"${M[$b.$n.start]}" "${M[$b.$n.cpu]}" "${M[$b.$n.idle]}" "${M[$b.$n.apply]}" "${M[$b.$n.worst]}" "${M[$b.$n.lazy]}"
	done
done
if [[ -n ${WGMESH_BEFORE:-} ]]; then
	echo
	echo "current / before (median ratios; below 1 is better):"
	printf '  %6s %8s %8s %8s %11s %9s %14s\n' N ready RSS CPU status apply "status max"
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
	for n in $SIZES; do
		printf '  %6d %8s %8s %8s %11s %9s %14s\n' "$n" \
			"$(ratio "${M[current.$n.ready]}" "${M[before.$n.ready]}")" "$(ratio "${M[current.$n.rss]}" "${M[before.$n.rss]}")" \
			"$(ratio "${M[current.$n.cpu]}" "${M[before.$n.cpu]}")" "$(ratio "${M[current.$n.idle]}" "${M[before.$n.idle]}")" \
			"$(ratio "${M[current.$n.apply]}" "${M[before.$n.apply]}")" "$(ratio "${M[current.$n.worst]}" "${M[before.$n.worst]}")"
	done
fi
