#!/usr/bin/env bash
# rules_pair.sh: what access rules cost. TCP throughput and CPU per GB of
# wgmesh pairs whose book has no rules against the same pairs whose book has
# RULES rules, in one run, in netstack and in TUN mode.
#
# Two network namespaces joined by a veth pair (198.18.3.1/24 and .2):
#
#   netstack        wgmesh up --mode netstack in A and B, UDP 51830; B exposes
#                   tcp:5201 (iperf3 on B's loopback), A forwards 127.0.0.1:15201
#   netstack+rules  the same with RULES rules in the book, UDP 51832, :15211
#   tun             wgmesh up --mode tun, wgm0 (A) <-> wgm1 (B), 10.78.0.0/24,
#                   UDP 51820, MTU 1420
#   tun+rules       the same with RULES rules, wgr0 <-> wgr1, 10.80.0.0/24, UDP 51822
#
# The rules: RULES-1 rules from alpha to beta, each opening other TCP and UDP
# ports, then one that opens tcp:5201. So in A->B runs beta judges every
# segment by a rule (a binary search in 2 x RULES merged spans) and alpha
# passes every ACK as a tracked reply (a conntrack lookup); in B->A runs (R)
# it is the other way round.
#
# iperf3 runs DURATION seconds per run, the pairs alternating ROUNDS times,
# the order rotating every round, one pair at a time (few cores). The summary
# gives the medians and the ratio with rules / without, per mode and
# direction; the issue's target is a ratio of at least 0.97.
#
# Usage (root):  bash bench/rules_pair.sh
# Environment:
#   DURATION=5   seconds per iperf3 run
#   ROUNDS=5     alternations
#   RULES=100    rules in the +rules books (1..1000)
#   PAIRS="netstack tun"   which modes
#   MODES="1 1R 4"         streams and direction (R: B->A)
#   WGMESH=PATH  a prebuilt wgmesh binary
#   KEEP_LOGS=1  keep the temporary directory

set -Eeuo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
RULES=${RULES:-100}
PAIRS=${PAIRS:-netstack tun}
MODES=${MODES:-1 1R 4}

die() { echo "rules_pair: $*" >&2; exit 1; }

if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 600)); then die "DURATION=$DURATION: want 1..600"; fi
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 1 || ROUNDS > 50)); then die "ROUNDS=$ROUNDS: want 1..50"; fi
if ! [[ $RULES =~ ^[0-9]+$ ]] || ((RULES < 1 || RULES > 1000)); then die "RULES=$RULES: want 1..1000"; fi
for m in $MODES; do
	[[ $m =~ ^[0-9]+R?$ ]] || die "MODES: bad mode $m"
done
for p in $PAIRS; do
	[[ $p =~ ^(netstack|tun)$ ]] || die "PAIRS: unknown mode $p (netstack, tun)"
done
((EUID == 0)) || die "must run as root (it creates network namespaces)"
for c in ip iperf3 jq timeout go ss; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found"
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
TMP=$(mktemp -d /tmp/wgmesh-rulesbench.XXXXXX)
NS_A=wgmrl-a-$$
NS_B=wgmrl-b-$$
declare -A PID=()
CHILD=

exec 3>&2 # the script's stderr, for pair_cleanup (lib.sh)
trap 'pair_cleanup rules_pair wgm0 wgm1 wgr0 wgr1' EXIT
trap 'echo "rules_pair: line $LINENO failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
start() {
	local name=$1 ns=$2
	shift 2
	ip netns exec "$ns" "$@" >"$TMP/$name.log" 2>&1 &
	PID[$name]=$!
}
waited() {
	local rc=0
	"$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}
wait_for() {
	local desc=$1 pid=$2 i
	shift 2
	for ((i = 0; i < 100; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || { cat "$TMP"/*.log >&2; die "$desc died"; }
		sleep 0.1
	done
	die "$desc not ready after 10 s (logs in $TMP)"
}
listening() { nsx "$1" ss -Hltn "sport = :$2" | grep -q .; }

# add_rules BOOK N: append N rules from alpha to beta, the last opening
# tcp:5201, and check the book.
add_rules() {
	local book=$1 n=$2 i
	for ((i = 0; i < n - 1; i++)); do
		printf '\n[[rule]]\nfrom = ["alpha"]\nto = ["beta"]\nports = ["tcp:%d", "tcp:%d-%d", "udp:%d"]\n' \
			$((10000 + i)) $((20000 + 10 * i)) $((20005 + 10 * i)) $((40000 + i)) >>"$book"
	done
	printf '\n[[rule]]\nfrom = ["alpha"]\nto = ["beta"]\nports = ["tcp:5201"]\n' >>"$book"
	"$WGMESH" book check "$book" | grep -q "$n access rules" || die "$book: want $n rules: $("$WGMESH" book check "$book" 2>&1)"
}

umask 077
if [[ -z ${WGMESH:-} ]]; then
	echo "building wgmesh from $REPO" >&2
	waited go build -C "$REPO" -o "$TMP/wgmesh" . || die "go build of wgmesh failed"
	WGMESH=$TMP/wgmesh
fi

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add veth-a netns "$NS_A" type veth peer name veth-b netns "$NS_B"
ip -n "$NS_A" addr add 198.18.3.1/24 dev veth-a
ip -n "$NS_B" addr add 198.18.3.2/24 dev veth-b
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set veth-a up
ip -n "$NS_B" link set veth-b up

start iperf3 "$NS_B" iperf3 -s -p 5201
wait_for "iperf3 server" "${PID[iperf3]}" listening "$NS_B" 5201

declare -A DAEMONS=() IPERF_ADDR=() LABEL=()

# netstack_pair NAME UDP_PORT LOCAL_PORT RULES
netstack_pair() {
	local name=$1 port=$2 lip=$3 rules=$4
	"$WGMESH" key generate --out "$TMP/$name-a.key" >/dev/null
	"$WGMESH" key generate --out "$TMP/$name-b.key" >/dev/null
	pair_book "$WGMESH" "$TMP/$name.toml" "$TMP/$name-a.key" "$TMP/$name-b.key" 10.79.0 198.18.3 "$port"
	((rules == 0)) || add_rules "$TMP/$name.toml" "$rules"
	start "$name-b" "$NS_B" "$WGMESH" up --book "$TMP/$name.toml" --key "$TMP/$name-b.key" --mode netstack \
		--control "$TMP/$name-b.ctl" --log-level warn --expose tcp:5201=127.0.0.1:5201
	start "$name-a" "$NS_A" "$WGMESH" up --book "$TMP/$name.toml" --key "$TMP/$name-a.key" --mode netstack \
		--control "$TMP/$name-a.ctl" --log-level warn --forward "tcp:127.0.0.1:$lip=beta:5201"
	wait_for "$name forward" "${PID[$name-a]}" listening "$NS_A" "$lip"
	DAEMONS[$name]="$name-a $name-b"
	IPERF_ADDR[$name]="127.0.0.1 $lip"
}

# tun_pair NAME IF_A IF_B MESH_PREFIX UDP_PORT RULES
tun_pair() {
	local name=$1 ifa=$2 ifb=$3 mesh=$4 port=$5 rules=$6
	sockets_free "$ifa" "$ifb"
	"$WGMESH" key generate --out "$TMP/$name-a.key" >/dev/null
	"$WGMESH" key generate --out "$TMP/$name-b.key" >/dev/null
	pair_book "$WGMESH" "$TMP/$name.toml" "$TMP/$name-a.key" "$TMP/$name-b.key" "$mesh" 198.18.3 "$port"
	((rules == 0)) || add_rules "$TMP/$name.toml" "$rules"
	tun_member "$WGMESH" "$TMP/$name.toml" "$NS_A" "$ifa" "$TMP/$name-a.key" "$mesh.1"
	tun_member "$WGMESH" "$TMP/$name.toml" "$NS_B" "$ifb" "$TMP/$name-b.key" "$mesh.2"
	DAEMONS[$name]="$ifa $ifb"
	IPERF_ADDR[$name]="$mesh.2 5201"
}

TUNNELS=()
if [[ " $PAIRS " == *" netstack "* ]]; then
	netstack_pair netstack 51830 15201 0
	netstack_pair netstack+rules 51832 15211 "$RULES"
	LABEL[netstack]="netstack, no rules" LABEL[netstack+rules]="netstack, $RULES rules"
	TUNNELS+=(netstack netstack+rules)
fi
if [[ " $PAIRS " == *" tun "* ]]; then
	tun_pair tun wgm0 wgm1 10.78.0 51820 0
	tun_pair tun+rules wgr0 wgr1 10.80.0 51822 "$RULES"
	LABEL[tun]="TUN, no rules" LABEL[tun+rules]="TUN, $RULES rules"
	TUNNELS+=(tun tun+rules)
fi

HZ=$(getconf CLK_TCK)
LOAD=$(cut -d' ' -f1 /proc/loadavg)
declare -A MBPS=() CPU=()

median_range() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1}
		END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%s %s %s\n", m, v[1], v[NR]
		}'
}
cpu_ticks() {
	local name total=0
	for name in ${DAEMONS[$1]}; do
		total=$((total + $(sed 's/.*) //' "/proc/${PID[$name]}/stat" | awk '{print $12 + $13}')))
	done
	echo "$total"
}

# throughput PAIR MODE RUN
throughput() {
	local c=$1 mode=$2 run=$3 json=$TMP/$1.$2.$3.json t0 t1 bps bytes mbps cpu addr port
	local -a args=(-t "$DURATION" -J --connect-timeout 5000 -P "${mode%R}")
	[[ $mode == *R ]] && args+=(-R)
	read -r addr port <<<"${IPERF_ADDR[$c]}"
	t0=$(cpu_ticks "$c")
	waited timeout $((DURATION + 30)) ip netns exec "$NS_A" iperf3 -c "$addr" -p "$port" "${args[@]}" >"$json" 2>>"$TMP/stderr.log" || true
	t1=$(cpu_ticks "$c")
	read -r bps bytes <<<"$(jq -r '.end.sum_received | "\(.bits_per_second) \(.bytes)"' "$json" 2>/dev/null || true)"
	[[ -n ${bytes:-} && $bytes != null ]] || die "iperf3 through ${LABEL[$c]} ($mode) failed: $(jq -r '.error // empty' "$json" 2>/dev/null)"
	mbps=$(awk -v b="$bps" 'BEGIN {printf "%.0f", b / 1e6}')
	cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')
	MBPS[$c.$mode]+="$mbps "
	CPU[$c.$mode]+="$cpu "
	printf '  %-3s run %d  %-24s %6d Mbit/s  %5.2f CPU s/GB\n' "$mode" "$run" "${LABEL[$c]}" "$mbps" "$cpu"
}

order() {
	local r=$1 n=${#TUNNELS[@]} i
	for ((i = 0; i < n; i++)); do
		printf '%s ' "${TUNNELS[$(((i + r) % n))]}"
	done
}

# First traffic: a pair whose first handshake went out before its peer was
# up waits for wireguard-go's retry.
for c in "${TUNNELS[@]}"; do
	read -r addr port <<<"${IPERF_ADDR[$c]}"
	for ((i = 0; i < 30; i++)); do
		timeout 10 ip netns exec "$NS_A" iperf3 -c "$addr" -p "$port" -t 1 -J >/dev/null 2>&1 && break
		sleep 1
	done
	((i < 30)) || die "no traffic through ${LABEL[$c]} after 30 tries (logs in $TMP)"
done

echo "$RULES rules against none; ${DURATION}s per run; $ROUNDS rounds; $(nproc) CPUs, load $LOAD; Linux $(uname -r)"
for mode in $MODES; do
	echo
	echo "Throughput, ${mode%R} stream(s), $([[ $mode == *R ]] && echo "B -> A" || echo "A -> B"):"
	for ((r = 0; r < ROUNDS; r++)); do
		for c in $(order "$r"); do
			throughput "$c" "$mode" $((r + 1))
		done
	done
done

echo
echo "Summary (median, range):"
declare -A MED=() CMED=()
for mode in $MODES; do
	for c in "${TUNNELS[@]}"; do
		# shellcheck disable=SC2086
		read -r m lo hi <<<"$(median_range ${MBPS[$c.$mode]})"
		# shellcheck disable=SC2086
		read -r cm clo chi <<<"$(median_range ${CPU[$c.$mode]})"
		MED[$c.$mode]=$m CMED[$c.$mode]=$cm
		printf '  %-3s %-24s %6.0f Mbit/s (%.0f..%.0f)  %5.2f CPU s/GB (%.2f..%.2f)\n' "$mode" "${LABEL[$c]}" "$m" "$lo" "$hi" "$cm" "$clo" "$chi"
	done
done
echo
for mode in $MODES; do
	for c in netstack tun; do
		[[ -n ${MED[$c.$mode]:-} ]] || continue
		printf '  %-3s %-8s %d rules / none: throughput %5.3f x, CPU per GB %5.3f x (target: throughput >= 0.97)\n' "$mode" "$c" "$RULES" \
			"$(awk -v a="${MED[$c+rules.$mode]}" -v b="${MED[$c.$mode]}" 'BEGIN {print a / b}')" \
			"$(awk -v a="${CMED[$c+rules.$mode]}" -v b="${CMED[$c.$mode]}" 'BEGIN {print (b > 0) ? a / b : 0}')"
	done
done
