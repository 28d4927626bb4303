#!/usr/bin/env bash
# tun_pair.sh: TCP throughput and RTT through a wgmesh TUN pair versus an
# upstream wireguard-go TUN pair configured identically, in one run.
#
# Two network namespaces joined by a veth pair (198.18.1.1/24 and .2) carry
# both tunnels side by side:
#
#   upstream wireguard-go  wgu0 (A) <-> wgu1 (B)  10.77.0.0/24  UDP 51821
#   wgmesh                 wgm0 (A) <-> wgm1 (B)  10.78.0.0/24  UDP 51820
#
# Both are wireguard-go from the module version in go.mod, on tun.CreateTUN,
# MTU 1420, no keepalive. iperf3 runs one TCP stream from A to an iperf3
# server in B, alternating upstream and wgmesh ROUNDS times, one at a time
# (the machines this runs on have few cores), and reports the CPU seconds
# each pair's two daemons spend per GB, which other jobs' load disturbs less
# than throughput. ping gives the RTT p50. The interface names differ
# between A and B because both namespaces share /var/run/wireguard, where
# the UAPI sockets live.
#
# Usage (root):  bash bench/tun_pair.sh
# Environment:
#   DURATION=10      seconds per iperf3 run (at least 10 for the issue's figures)
#   ROUNDS=3         upstream/wgmesh alternations
#   ORDER="upstream wgmesh"  which pair goes first in each round; abba swaps
#                    every other round, so that load that grows or fades
#                    during the run (other jobs on the machine) favours neither
#   RAW=1            also one run over the bare veth, as the upper bound (0: skip)
#   WGMESH=PATH      use this wgmesh binary instead of building one
#   WIREGUARD_GO=PATH  use this wireguard-go binary instead of building one
#   KEEP_LOGS=1      keep the temporary directory with daemon logs and JSON

set -Eeuo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
RAW=${RAW:-1}
ORDER=${ORDER:-upstream wgmesh}
TARGET_RATIO=0.95
PING_COUNT=20

die() { echo "tun_pair: $*" >&2; exit 1; }

if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 600)); then
	die "DURATION=$DURATION: want seconds, 1..600"
fi
case $ORDER in
"upstream wgmesh" | "wgmesh upstream" | abba) ;;
*) die "ORDER=$ORDER: want \"upstream wgmesh\", \"wgmesh upstream\" or abba" ;;
esac
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 1 || ROUNDS > 50)); then
	die "ROUNDS=$ROUNDS: want 1..50"
fi
((EUID == 0)) || die "must run as root (it creates network namespaces and TUN interfaces)"

need() {
	command -v "$1" >/dev/null 2>&1 || die "$1 not found; install it (Debian: apt-get install $2)"
}
need ip iproute2
need ping iputils-ping
need wg wireguard-tools
need iperf3 iperf3
need timeout coreutils
# json_result FILE: "bits/s bytes" received, from iperf3 -J output; json_err FILE: its error.
if command -v jq >/dev/null 2>&1; then
	json_result() { jq -r '.end.sum_received | "\(.bits_per_second) \(.bytes)"' "$1" 2>/dev/null || true; }
	json_err() { jq -r '.error // empty' "$1" 2>/dev/null || true; }
elif command -v python3 >/dev/null 2>&1; then
	json_result() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["end"]["sum_received"]; print(r["bits_per_second"], r["bytes"])' "$1" 2>/dev/null || true; }
	json_err() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$1" 2>/dev/null || true; }
else
	die "neither jq nor python3 found; install one to read iperf3's JSON (Debian: apt-get install jq)"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
TMP=$(mktemp -d /tmp/wgmesh-bench.XXXXXX)
NS_A=wgmbench-a-$$
NS_B=wgmbench-b-$$
declare -A PID=() # start name (the interface name for daemons) -> process id
CHILD=

exec 3>&2 # the script's stderr, for pair_cleanup (lib.sh)
# Every started name: the daemons' interface names, whose UAPI sockets a
# killed daemon leaves behind.
trap 'pair_cleanup tun_pair "${!PID[@]}"' EXIT
trap 'echo "tun_pair: line $LINENO failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# nsx NS CMD...: run CMD inside namespace NS.
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# start NAME NS CMD...: run CMD in NS in the background, logging to $TMP/NAME.log.
start() {
	local name=$1 ns=$2
	shift 2
	ip netns exec "$ns" "$@" >"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
}

# order ROUND: the cases of a round, in the order they run.
order() {
	if [[ $ORDER == abba ]] && (($1 % 2 == 0)); then
		echo "wgmesh upstream"
	elif [[ $ORDER == abba ]]; then
		echo "upstream wgmesh"
	else
		echo "$ORDER"
	fi
}

# waited CMD...: run CMD and wait for it. It runs in the background because
# bash delays a trap until a foreground child exits, and ignores Ctrl-C
# entirely if that child (go, ping, iperf3) handles SIGINT and exits
# normally; the wait builtin returns at once instead.
waited() {
	local rc=0
	"$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}

# bounded SECS OUT CMD...: waited CMD with stdout to OUT, killed after SECS.
bounded() {
	local secs=$1 out=$2
	shift 2
	waited timeout "$secs" "$@" >"$out" 2>>"$TMP/stderr.log"
}

# wait_for DESC PID CMD...: poll CMD for up to 10 s while PID lives.
wait_for() {
	local desc=$1 pid=$2 i
	shift 2
	for ((i = 0; i < 100; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "tun_pair: process died while waiting for $desc; its log:" >&2
			cat "$TMP"/*.log >&2 || true
			die "$desc not ready"
		fi
		sleep 0.1
	done
	die "$desc not ready after 10 s (logs in $TMP)"
}

sockets_free wgu0 wgu1 wgm0 wgm1

# --- binaries ---------------------------------------------------------------

umask 077
if [[ -n ${WGMESH:-} ]]; then
	[[ -x $WGMESH ]] || die "WGMESH=$WGMESH is not executable"
else
	need go golang
	echo "building wgmesh from $REPO" >&2
	waited go build -C "$REPO" -o "$TMP/wgmesh" . || die "go build of wgmesh failed"
	WGMESH=$TMP/wgmesh
fi
if [[ -n ${WIREGUARD_GO:-} ]]; then
	[[ -x $WIREGUARD_GO ]] || die "WIREGUARD_GO=$WIREGUARD_GO is not executable"
	WGGO_VERSION="$WIREGUARD_GO"
else
	need go golang
	waited go list -C "$REPO" -m -f '{{.Path}} {{.Version}}' golang.zx2c4.com/wireguard >"$TMP/wggo.version"
	WGGO_VERSION=$(<"$TMP/wggo.version")
	echo "building upstream wireguard-go ($WGGO_VERSION)" >&2
	waited go build -C "$REPO" -o "$TMP/wireguard-go" golang.zx2c4.com/wireguard || die "go build of wireguard-go failed"
	WIREGUARD_GO=$TMP/wireguard-go
fi

# --- underlay ---------------------------------------------------------------

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add veth-a netns "$NS_A" type veth peer name veth-b netns "$NS_B"
ip -n "$NS_A" addr add 198.18.1.1/24 dev veth-a
ip -n "$NS_B" addr add 198.18.1.2/24 dev veth-b
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set veth-a up
ip -n "$NS_B" link set veth-b up

# --- upstream wireguard-go pair ---------------------------------------------

wg genkey >"$TMP/ua.key"
wg genkey >"$TMP/ub.key"
UA_PUB=$(wg pubkey <"$TMP/ua.key")
UB_PUB=$(wg pubkey <"$TMP/ub.key")

# upstream_side NS IF KEY ADDR PEER_PUB PEER_ADDR PEER_UNDERLAY
upstream_side() {
	local ns=$1 ifname=$2 key=$3 addr=$4 peer=$5 peer_addr=$6 peer_ip=$7
	start "$ifname" "$ns" env LOG_LEVEL=error "$WIREGUARD_GO" -f "$ifname"
	wait_for "wireguard-go $ifname" "${PID[$ifname]}" \
		sh -c "test -S '/var/run/wireguard/$ifname.sock' && ip -n '$ns' link show dev '$ifname'"
	nsx "$ns" wg set "$ifname" private-key "$key" listen-port 51821 \
		peer "$peer" allowed-ips "$peer_addr/32" endpoint "$peer_ip:51821"
	ip -n "$ns" addr add "$addr/24" dev "$ifname"
	ip -n "$ns" link set "$ifname" mtu 1420 up
}
upstream_side "$NS_A" wgu0 "$TMP/ua.key" 10.77.0.1 "$UB_PUB" 10.77.0.2 198.18.1.2
upstream_side "$NS_B" wgu1 "$TMP/ub.key" 10.77.0.2 "$UA_PUB" 10.77.0.1 198.18.1.1

# --- wgmesh pair ------------------------------------------------------------

"$WGMESH" key generate --out "$TMP/ma.key" >/dev/null
"$WGMESH" key generate --out "$TMP/mb.key" >/dev/null
pair_book "$WGMESH" "$TMP/book.toml" "$TMP/ma.key" "$TMP/mb.key" 10.78.0 198.18.1 51820
tun_member "$WGMESH" "$TMP/book.toml" "$NS_A" wgm0 "$TMP/ma.key" 10.78.0.1
tun_member "$WGMESH" "$TMP/book.toml" "$NS_B" wgm1 "$TMP/mb.key" 10.78.0.2

# Both pairs must match in what matters to throughput; show it.
for dev in wgu0 wgm0; do
	printf '%-5s %s  keepalive %s\n' "$dev" \
		"$(ip -n "$NS_A" -o link show dev "$dev" | grep -o 'mtu [0-9]* qdisc [^ ]*')" \
		"$(nsx "$NS_A" wg show "$dev" persistent-keepalive | awk '{print $2}')"
done

# --- iperf3 server ----------------------------------------------------------

start iperf3 "$NS_B" iperf3 -s
wait_for "iperf3 server" "${PID[iperf3]}" sh -c "ip netns exec '$NS_B' ss -Hltn 'sport = :5201' | grep -q ."

# --- measurements -----------------------------------------------------------

# Cases: key, label, address of the iperf3 server in B, and of B for ping.
declare -A LABEL=(
	[upstream]="upstream wireguard-go TUN pair"
	[wgmesh]="wgmesh TUN pair"
	[raw]="raw veth, no tunnel"
)
declare -A DST=([upstream]=10.77.0.2 [wgmesh]=10.78.0.2 [raw]=198.18.1.2)
# DAEMONS: the processes (by start name) that carry a case's traffic.
declare -A DAEMONS=([upstream]="wgu0 wgu1" [wgmesh]="wgm0 wgm1" [raw]="")
declare -A MBPS=() CPU=() MEDIAN=() CPUMEDIAN=() RTT=()
HZ=$(getconf CLK_TCK)
LOAD=$(cut -d' ' -f1 /proc/loadavg)

# median_range VALUES...: "median min max" of numbers.
median_range() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1}
		END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%s %s %s\n", m, v[1], v[NR]
		}'
}

# rtt CASE: ping A -> B through CASE; adds the round trips (ms) to RTT[CASE].
rtt() {
	local out=$TMP/ping.$1
	bounded 30 "$out" ip netns exec "$NS_A" ping -n -c "$PING_COUNT" -i 0.05 -W 1 "${DST[$1]}" ||
		die "ping through ${LABEL[$1]} failed: $(cat "$out")"
	RTT[$1]+="$(sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' "$out" | tr '\n' ' ')"
}

# cpu_ticks CASE: user+system clock ticks used so far by the pair's two daemons.
cpu_ticks() {
	local name pid total=0
	for name in ${DAEMONS[$1]}; do
		pid=${PID[$name]}
		# Fields 14 and 15 of /proc/PID/stat, counted after the ")" that
		# ends the command name.
		total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
	done
	echo "$total"
}

# throughput CASE RUN: one iperf3 run A -> B; prints and records Mbit/s and
# the CPU seconds the pair's daemons spent per GB received.
throughput() {
	local c=$1 run=$2 json=$TMP/$1.$2.json t0 t1 bps bytes mbps cpu
	t0=$(cpu_ticks "$c")
	bounded $((DURATION + 30)) "$json" ip netns exec "$NS_A" \
		iperf3 -c "${DST[$c]}" -t "$DURATION" -J --connect-timeout 5000 || true
	t1=$(cpu_ticks "$c")
	read -r bps bytes <<<"$(json_result "$json")"
	[[ -n ${bytes:-} ]] || die "iperf3 through ${LABEL[$c]} failed: $(json_err "$json")"
	mbps=$(awk -v b="$bps" 'BEGIN {printf "%.0f", b / 1e6}')
	MBPS[$c]+="$mbps "
	if [[ -n ${DAEMONS[$c]} ]]; then
		cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')
		CPU[$c]+="$cpu "
		printf '  run %d  %-32s %6d Mbit/s  %5.2f CPU s/GB\n' "$run" "${LABEL[$c]}" "$mbps" "$cpu"
	else
		printf '  run %d  %-32s %6d Mbit/s\n' "$run" "${LABEL[$c]}" "$mbps"
	fi
}

# Alternating like the throughput runs, so neither pair always goes first.
# The first pings also complete both pairs' handshakes.
echo
echo "RTT, ping -c $PING_COUNT -i 0.05 from A to B, $ROUNDS times alternating:"
for ((r = 1; r <= ROUNDS; r++)); do
	for c in $(order "$r"); do
		rtt "$c"
	done
done
rtt raw
for c in raw upstream wgmesh; do
	# shellcheck disable=SC2086
	read -r p50 _ <<<"$(median_range ${RTT[$c]})"
	printf '  %-32s p50 %.3f ms  (%d pings)\n' "${LABEL[$c]}" "$p50" "$(wc -w <<<"${RTT[$c]}")"
done

echo
echo "Throughput, iperf3 one TCP stream A -> B, ${DURATION}s per run, alternating:"
for ((r = 1; r <= ROUNDS; r++)); do
	for c in $(order "$r"); do
		throughput "$c" "$r"
	done
done
if [[ $RAW == 1 ]]; then
	throughput raw 1
fi

echo
summary() {
	local c=$1 m lo hi n cm clo chi
	# shellcheck disable=SC2086
	read -r m lo hi <<<"$(median_range ${MBPS[$c]})"
	n=$(wc -w <<<"${MBPS[$c]}")
	printf '%-32s median %5.0f Mbit/s  (%.0f..%.0f, %d runs)' "${LABEL[$c]}" "$m" "$lo" "$hi" "$n"
	MEDIAN[$c]=$m
	if [[ -n ${CPU[$c]:-} ]]; then
		# shellcheck disable=SC2086
		read -r cm clo chi <<<"$(median_range ${CPU[$c]})"
		printf '  %.2f CPU s/GB (%.2f..%.2f)' "$cm" "$clo" "$chi"
		CPUMEDIAN[$c]=$cm
	fi
	echo
}
summary upstream
summary wgmesh
if [[ $RAW == 1 ]]; then
	summary raw
fi
ratio=$(awk -v w="${MEDIAN[wgmesh]}" -v u="${MEDIAN[upstream]}" 'BEGIN {printf "%.2f", w / u}')
verdict=$(awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN {print (r >= t) ? "" : "  BELOW TARGET"}')
printf '%-32s %s   (target >= %s)%s\n' "ratio wgmesh/upstream" "$ratio" "$TARGET_RATIO" "$verdict"
printf '%-32s %.2f\n' "CPU per GB wgmesh/upstream" "$(awk -v w="${CPUMEDIAN[wgmesh]}" -v u="${CPUMEDIAN[upstream]}" 'BEGIN {print w / u}')"
echo "($WGGO_VERSION; $(nproc) CPUs, load average $LOAD at start; Linux $(uname -r))"
