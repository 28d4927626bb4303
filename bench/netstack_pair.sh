#!/usr/bin/env bash
# netstack_pair.sh: TCP throughput, RTT and CPU per GB through a pair of
# rootless wgmesh members (--mode netstack, two processes) against an
# upstream wireguard-go TUN pair and raw loopback TCP, in one run.
#
# Two network namespaces joined by a veth pair (198.18.2.1/24 and .2):
#
#   netstack  wgmesh up --mode netstack in A and B, UDP 51830; B exposes
#             tcp:5201 (iperf3 on B's loopback) and tcp:5300 (echo), A
#             forwards 127.0.0.1:15201 and :15300 to them.
#   before    the same with the binary in WGMESH_BEFORE (UDP 51831, local
#             ports 15202 and 15302), when set: before/after in one run.
#   upstream  wireguard-go -f on TUN, wgu0 (A) <-> wgu1 (B), 10.77.0.0/24,
#             UDP 51821, MTU 1420 (the setup of bench/tun_pair.sh).
#   tun       wgmesh up --mode tun, wgm0 (A) <-> wgm1 (B), 10.78.0.0/24,
#             UDP 51820, MTU 1420: the TUN pair must not regress.
#   tunbefore the same with WGMESH_BEFORE, wgb0 <-> wgb1, 10.76.0.0/24, UDP
#             51822, when WGMESH_BEFORE is set and PAIRS holds tun.
#   embed     RTT only, when PAIRS holds embed: the ping-pong client joins
#             the mesh itself (the Go API, bench/tcprtt -book) and dials B's
#             netstack daemon (10.75.0.2, UDP 51832, --expose tcp:5300):
#             no loopback connection and no relay on A's side.
#   raw       iperf3 over B's loopback: the upper bound.
#
# Throughput: iperf3 for DURATION seconds, 1 and 4 streams, A->B and B->A
# (-R), the pairs alternating ROUNDS times. RTT: p50/p99 of 1-byte TCP
# ping-pong (bench/tcprtt), alternating likewise. CPU: the seconds both
# daemons of a pair spend (utime+stime from /proc/PID/stat) per GB moved.
# Per round trip of the ping-pong: the CPU time both daemons spent and the
# wake-up IPIs the machine took (rescheduling and function-call interrupts).
# Recoveries: the TCP loss recoveries a netstack pair counted during the
# run (wgmesh status: tcp.recoveries), where the binary reports them.
# Idle: the share of the machine's CPU time left idle during each run; a
# pair that is slower with CPUs to spare is waiting on its own hand-offs.
#
# Usage (root):  bash bench/netstack_pair.sh
# Environment:
#   DURATION=5    seconds per iperf3 run
#   ROUNDS=3      alternations
#   PAIRS="upstream tun netstack"   which pairs (before is added with WGMESH_BEFORE;
#                 embed only when named)
#   MODES="1 4 1R 4R"            streams and direction (R: B->A); MODES= (empty): RTT only
#   MTU=1420      the MTU of every pair (book and upstream's interfaces)
#   NETEM=""      e.g. "delay 10ms loss 0.05%": tc netem on both veth ends
#   WGMESH=PATH, WGMESH_BEFORE=PATH, WIREGUARD_GO=PATH   prebuilt binaries
#   RTT_COUNT=2000  round trips per RTT measurement
#   KEEP_LOGS=1   keep the temporary directory
#   PIN=1         each member's side on a CPU of its own, as two one-CPU
#                 machines: A's daemons, iperf3 client and ping-pong client
#                 on CPU 0, B's daemons, iperf3 server and echo on CPU 1
#                 (the raw loopback run, all in B, shares CPU 1); needs 2 CPUs
#   STEAL_MAX=     e.g. 5: a throughput run during which the host stole more
#                  than 5 % of the CPUs is taken again, STEAL_TRIES=3 times
#                  in all at most (the last is kept); every run's line shows
#                  its stolen share

set -Eeuo pipefail

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PAIRS=${PAIRS:-upstream tun netstack}
MODES=${MODES-1 4 1R 4R}
NETEM=${NETEM:-}
MTU=${MTU:-1420}
RTT_COUNT=${RTT_COUNT:-2000}
STEAL_MAX=${STEAL_MAX:-}
STEAL_TRIES=${STEAL_TRIES:-3}
PIN=${PIN:-}

die() { echo "netstack_pair: $*" >&2; exit 1; }

if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 1 || DURATION > 600)); then die "DURATION=$DURATION: want 1..600"; fi
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 1 || ROUNDS > 50)); then die "ROUNDS=$ROUNDS: want 1..50"; fi
if [[ -n $STEAL_MAX ]] && ! [[ $STEAL_MAX =~ ^[0-9]+$ && $STEAL_MAX -le 100 ]]; then die "STEAL_MAX=$STEAL_MAX: want a percentage 0..100, or empty for no retries"; fi
if ! [[ $STEAL_TRIES =~ ^[0-9]+$ ]] || ((STEAL_TRIES < 1 || STEAL_TRIES > 10)); then die "STEAL_TRIES=$STEAL_TRIES: want 1..10"; fi
if [[ -n $PIN && $PIN != 1 ]]; then die "PIN=$PIN: want 1, or empty for no pinning"; fi
if [[ -n $PIN ]]; then
	command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
	(($(nproc) >= 2)) || die "PIN=1 needs 2 CPUs, this machine has $(nproc)"
fi
for m in $MODES; do
	[[ $m =~ ^[0-9]+R?$ ]] || die "MODES: bad mode $m"
done
((EUID == 0)) || die "must run as root (it creates network namespaces)"
for c in ip iperf3 jq timeout go; do
	command -v "$c" >/dev/null 2>&1 || die "$c not found"
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
TMP=$(mktemp -d /tmp/wgmesh-nsbench.XXXXXX)
NS_A=wgmns-a-$$
NS_B=wgmns-b-$$
declare -A PID=()
CHILD=

exec 3>&2 # the script's stderr, for pair_cleanup (lib.sh)
trap 'pair_cleanup netstack_pair wgu0 wgu1 wgm0 wgm1 wgb0 wgb1' EXIT
trap 'echo "netstack_pair: line $LINENO failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# ns_cmd NS: NSCMD becomes the prefix that runs a command in namespace NS,
# on that side's CPU when PIN is set.
ns_cmd() {
	NSCMD=(ip netns exec "$1")
	if [[ -n $PIN && $1 == "$NS_A" ]]; then
		NSCMD+=(taskset -c 0)
	elif [[ -n $PIN ]]; then
		NSCMD+=(taskset -c 1)
	fi
}
start() {
	local name=$1 ns=$2
	shift 2
	ns_cmd "$ns"
	"${NSCMD[@]}" "$@" >"$TMP/$name.log" 2>&1 &
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

# --- binaries ----------------------------------------------------------------

umask 077
if [[ -z ${WGMESH:-} ]]; then
	echo "building wgmesh from $REPO" >&2
	waited go build -C "$REPO" -o "$TMP/wgmesh" . || die "go build of wgmesh failed"
	WGMESH=$TMP/wgmesh
fi
waited go build -C "$REPO" -o "$TMP/tcprtt" ./bench/tcprtt || die "go build of tcprtt failed"
for p in $PAIRS; do
	[[ $p =~ ^(upstream|tun|netstack|embed)$ ]] || die "PAIRS: unknown pair $p (upstream, tun, netstack, embed)"
done
if [[ " $PAIRS " == *" upstream "* && -z ${WIREGUARD_GO:-} ]]; then
	echo "building upstream wireguard-go" >&2
	waited go build -C "$REPO" -o "$TMP/wireguard-go" golang.zx2c4.com/wireguard || die "go build of wireguard-go failed"
	WIREGUARD_GO=$TMP/wireguard-go
fi
if [[ -n ${WGMESH_BEFORE:-} ]]; then
	[[ -x $WGMESH_BEFORE ]] || die "WGMESH_BEFORE=$WGMESH_BEFORE is not executable"
	PAIRS="$PAIRS before"
	[[ " $PAIRS " == *" tun "* ]] && PAIRS="$PAIRS tunbefore"
fi

# --- underlay ----------------------------------------------------------------

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add veth-a netns "$NS_A" type veth peer name veth-b netns "$NS_B"
ip -n "$NS_A" addr add 198.18.2.1/24 dev veth-a
ip -n "$NS_B" addr add 198.18.2.2/24 dev veth-b
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
ip -n "$NS_A" link set veth-a up
ip -n "$NS_B" link set veth-b up
if [[ -n $NETEM ]]; then
	# shellcheck disable=SC2086
	nsx "$NS_A" tc qdisc add dev veth-a root netem $NETEM
	# shellcheck disable=SC2086
	nsx "$NS_B" tc qdisc add dev veth-b root netem $NETEM
fi

# Servers in B: iperf3 and the echo on every address (loopback for the
# netstack pairs, 10.77.0.2 for the TUN pair).
start iperf3 "$NS_B" iperf3 -s -p 5201
start echo "$NS_B" "$TMP/tcprtt" -serve 0.0.0.0:5300
wait_for "iperf3 server" "${PID[iperf3]}" listening "$NS_B" 5201
wait_for "echo server" "${PID[echo]}" listening "$NS_B" 5300

declare -A LABEL=([raw]="raw loopback TCP (upper bound)" [upstream]="upstream wireguard-go TUN pair"
	[tun]="wgmesh TUN pair" [netstack]="wgmesh netstack pair" [before]="wgmesh netstack pair, before"
	[tunbefore]="wgmesh TUN pair, before" [embed]="netstack, Go API client in A")
declare -A DAEMONS=([raw]="")
declare -A IPERF_ADDR=() RTT_ADDR=() IPERF_NS=() STATUS_OF=() RTT_ARGS=()

# --- netstack pairs ------------------------------------------------------------

# netstack_pair NAME BINARY UDP_PORT IPERF_LOCAL RTT_LOCAL
netstack_pair() {
	local name=$1 bin=$2 port=$3 lip=$4 lrtt=$5
	"$bin" key generate --out "$TMP/$name-a.key" >/dev/null
	"$bin" key generate --out "$TMP/$name-b.key" >/dev/null
	pair_book "$bin" "$TMP/$name.toml" "$TMP/$name-a.key" "$TMP/$name-b.key" 10.79.0 198.18.2 "$port"
	start "$name-b" "$NS_B" "$bin" up --book "$TMP/$name.toml" --key "$TMP/$name-b.key" --mode netstack \
		--control "$TMP/$name-b.ctl" --log-level warn \
		--expose tcp:5201=127.0.0.1:5201 --expose tcp:5300=127.0.0.1:5300
	start "$name-a" "$NS_A" "$bin" up --book "$TMP/$name.toml" --key "$TMP/$name-a.key" --mode netstack \
		--control "$TMP/$name-a.ctl" --log-level warn \
		--forward "tcp:127.0.0.1:$lip=beta:5201" --forward "tcp:127.0.0.1:$lrtt=beta:5300"
	wait_for "$name forward" "${PID[$name-a]}" listening "$NS_A" "$lip"
	wait_for "$name forward" "${PID[$name-a]}" listening "$NS_A" "$lrtt"
	DAEMONS[$name]="$name-a $name-b"
	STATUS_OF[$name]="$bin $TMP/$name-a.ctl $TMP/$name-b.ctl"
	IPERF_ADDR[$name]="127.0.0.1 $lip"
	RTT_ADDR[$name]="127.0.0.1:$lrtt"
	IPERF_NS[$name]=$NS_A
}
if [[ " $PAIRS " == *" before "* ]]; then
	netstack_pair before "$WGMESH_BEFORE" 51831 15202 15302
fi
if [[ " $PAIRS " == *" netstack "* ]]; then
	netstack_pair netstack "$WGMESH" 51830 15201 15300
fi
# The embed pair: B's daemon as in netstack_pair, A a mesh member inside
# each ping-pong client (RTT only; its CPU figure is B's daemon's alone).
if [[ " $PAIRS " == *" embed "* ]]; then
	"$WGMESH" key generate --out "$TMP/embed-a.key" >/dev/null
	"$WGMESH" key generate --out "$TMP/embed-b.key" >/dev/null
	pair_book "$WGMESH" "$TMP/embed.toml" "$TMP/embed-a.key" "$TMP/embed-b.key" 10.75.0 198.18.2 51832
	start embed-b "$NS_B" "$WGMESH" up --book "$TMP/embed.toml" --key "$TMP/embed-b.key" --mode netstack \
		--control "$TMP/embed-b.ctl" --log-level warn --expose tcp:5300=127.0.0.1:5300
	DAEMONS[embed]="embed-b"
	RTT_ADDR[embed]="10.75.0.2:5300"
	RTT_ARGS[embed]="-book $TMP/embed.toml -key $TMP/embed-a.key"
fi

# --- upstream wireguard-go TUN pair (as bench/tun_pair.sh) ----------------------

if [[ " $PAIRS " == *" upstream "* ]]; then
	sockets_free wgu0 wgu1
	"$WGMESH" key generate --out "$TMP/ua.key" >/dev/null
	"$WGMESH" key generate --out "$TMP/ub.key" >/dev/null
	UA_PUB=$("$WGMESH" key public --key "$TMP/ua.key")
	UB_PUB=$("$WGMESH" key public --key "$TMP/ub.key")
	upstream_side() {
		local ns=$1 ifname=$2 key=$3 addr=$4 peer=$5 peer_addr=$6 peer_ip=$7
		start "$ifname" "$ns" env LOG_LEVEL=error "$WIREGUARD_GO" -f "$ifname"
		wait_for "wireguard-go $ifname" "${PID[$ifname]}" \
			sh -c "test -S '/var/run/wireguard/$ifname.sock' && ip -n '$ns' link show dev '$ifname'"
		nsx "$ns" wg set "$ifname" private-key "$key" listen-port 51821 \
			peer "$peer" allowed-ips "$peer_addr/32" endpoint "$peer_ip:51821"
		ip -n "$ns" addr add "$addr/24" dev "$ifname"
		ip -n "$ns" link set "$ifname" mtu "$MTU" up
	}
	upstream_side "$NS_A" wgu0 "$TMP/ua.key" 10.77.0.1 "$UB_PUB" 10.77.0.2 198.18.2.2
	upstream_side "$NS_B" wgu1 "$TMP/ub.key" 10.77.0.2 "$UA_PUB" 10.77.0.1 198.18.2.1
	DAEMONS[upstream]="wgu0 wgu1"
	IPERF_ADDR[upstream]="10.77.0.2 5201"
	RTT_ADDR[upstream]="10.77.0.2:5300"
	IPERF_NS[upstream]=$NS_A
fi
# --- wgmesh TUN pair (as bench/tun_pair.sh) ------------------------------------

# tun_pair NAME BINARY NET IF_A IF_B UDP_PORT: a wgmesh TUN pair on NET.1 and
# NET.2 (the keys ta/tb are shared by both TUN pairs).
tun_pair() {
	local name=$1 bin=$2 net=$3 ifa=$4 ifb=$5 port=$6
	sockets_free "$ifa" "$ifb"
	[[ -f $TMP/ta.key ]] || "$WGMESH" key generate --out "$TMP/ta.key" >/dev/null
	[[ -f $TMP/tb.key ]] || "$WGMESH" key generate --out "$TMP/tb.key" >/dev/null
	pair_book "$bin" "$TMP/$name.toml" "$TMP/ta.key" "$TMP/tb.key" "$net" 198.18.2 "$port"
	tun_member "$bin" "$TMP/$name.toml" "$NS_A" "$ifa" "$TMP/ta.key" "$net.1"
	tun_member "$bin" "$TMP/$name.toml" "$NS_B" "$ifb" "$TMP/tb.key" "$net.2"
	DAEMONS[$name]="$ifa $ifb"
	IPERF_ADDR[$name]="$net.2 5201"
	RTT_ADDR[$name]="$net.2:5300"
	IPERF_NS[$name]=$NS_A
}
if [[ " $PAIRS " == *" tun "* ]]; then
	tun_pair tun "$WGMESH" 10.78.0 wgm0 wgm1 51820
fi
if [[ " $PAIRS " == *" tunbefore "* ]]; then
	tun_pair tunbefore "$WGMESH_BEFORE" 10.76.0 wgb0 wgb1 51822
fi
IPERF_ADDR[raw]="127.0.0.1 5201"
IPERF_NS[raw]=$NS_B

# --- measurements --------------------------------------------------------------

HZ=$(getconf CLK_TCK)
LOAD=$(cut -d' ' -f1 /proc/loadavg)
# cpu_times: the machine's idle and steal jiffies and their total, from
# /proc/stat (guest time is inside user time already). Steal is time the
# hypervisor gave this VM's CPUs to others; on a shared host it moves
# every pair's figures.
cpu_times() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, $9, t}' /proc/stat; }
read -r IDLE0 STEAL0 TOTAL0 <<<"$(cpu_times)"
declare -A MBPS=() CPU=() P50=() P50_ALL=() P99=() SKB=() IDLE=() STOLEN=() RTT_CPU=() RTT_IPI=()

median_range() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1}
		END {
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%s %s %s\n", m, v[1], v[NR]
		}'
}
# ratios "A1 A2 ..." "B1 B2 ...": A_i / B_i for each round i. Pairs that
# ran back to back in the same round share the machine's load of that
# minute, so the median of these ratios shows less of the load's drift
# than the ratio of the two medians.
ratios() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		n = split(a, x, " "); split(b, y, " ")
		for (i = 1; i <= n; i++) if (y[i] > 0) print x[i] / y[i]
	}'
}
cpu_ticks() {
	local name total=0
	for name in ${DAEMONS[$1]}; do
		total=$((total + $(sed 's/.*) //' "/proc/${PID[$name]}/stat" | awk '{print $12 + $13}')))
	done
	echo "$total"
}

# tcp_recoveries PAIR: the loss recoveries both members of a netstack pair
# have counted (wgmesh status: tcp.recoveries), or nothing where the binary
# does not report them.
tcp_recoveries() {
	[[ -n ${STATUS_OF[$1]:-} ]] || return 0
	local bin ctl_a ctl_b
	read -r bin ctl_a ctl_b <<<"${STATUS_OF[$1]}"
	{ "$bin" status --json --control "$ctl_a"; "$bin" status --json --control "$ctl_b"; } 2>/dev/null |
		jq -rs 'if all(.[]; .tcp != null) then map(.tcp.recoveries) | add else empty end' 2>/dev/null || true
}

# veth_tx MODE: "packets bytes" the sending end's veth has sent so far. A
# UDP GSO message that passes veth whole counts once, one the kernel
# segmented in software once per datagram.
veth_tx() {
	local ns=$NS_A dev=veth-a
	[[ $1 == *R ]] && ns=$NS_B dev=veth-b
	ip -n "$ns" -s -j link show dev "$dev" | jq -r '.[0].stats64.tx | "\(.packets) \(.bytes)"'
}

# throughput PAIR MODE RUN: one iperf3 run, taken again (STEAL_TRIES
# times in all at most) while the host steals more than STEAL_MAX % of the
# CPUs during it; only the run kept counts.
throughput() {
	local try
	for ((try = 1; ; try++)); do
		throughput_once "$@" "$try" && return
	done
}

# throughput_once PAIR MODE RUN TRY: prints the run's line and adds its
# figures to the tables; fails, leaving the tables alone, when the run is
# to be taken again.
throughput_once() {
	local c=$1 mode=$2 run=$3 try=$4 json=$TMP/$1.$2.$3.json t0 t1 r0 r1 rec= bps bytes mbps cpu addr port p0 p1 b0 b1 skb
	local i0 i1 tt0 tt1 s0 s1 idle stolen
	local -a args=(-t "$DURATION" -J --connect-timeout 5000 -P "${mode%R}")
	[[ $mode == *R ]] && args+=(-R)
	read -r addr port <<<"${IPERF_ADDR[$c]}"
	t0=$(cpu_ticks "$c")
	r0=$(tcp_recoveries "$c")
	read -r p0 b0 <<<"$(veth_tx "$mode")"
	read -r i0 s0 tt0 <<<"$(cpu_times)"
	ns_cmd "${IPERF_NS[$c]}"
	waited timeout $((DURATION + 30)) "${NSCMD[@]}" iperf3 -c "$addr" -p "$port" "${args[@]}" >"$json" 2>>"$TMP/stderr.log" || true
	read -r i1 s1 tt1 <<<"$(cpu_times)"
	t1=$(cpu_ticks "$c")
	r1=$(tcp_recoveries "$c")
	read -r p1 b1 <<<"$(veth_tx "$mode")"
	read -r bps bytes <<<"$(jq -r '.end.sum_received | "\(.bits_per_second) \(.bytes)"' "$json" 2>/dev/null || true)"
	[[ -n ${bytes:-} && $bytes != null ]] || die "iperf3 through ${LABEL[$c]} ($mode) failed: $(jq -r '.error // empty' "$json" 2>/dev/null)"
	mbps=$(awk -v b="$bps" 'BEGIN {printf "%.0f", b / 1e6}')
	# A pair that leaves the CPUs idle is waiting on itself, not on them.
	idle=$(awk -v i=$((i1 - i0)) -v t=$((tt1 - tt0)) 'BEGIN {printf "%.0f", (t > 0 ? 100 * i / t : 0)}')
	stolen=$(awk -v s=$((s1 - s0)) -v t=$((tt1 - tt0)) 'BEGIN {printf "%.0f", (t > 0 ? 100 * s / t : 0)}')
	if [[ -n $STEAL_MAX ]] && ((stolen > STEAL_MAX && try < STEAL_TRIES)); then
		printf '  %-3s run %d  %-34s %6d Mbit/s  %2d %% stolen by the host: again\n' "$mode" "$run" "${LABEL[$c]}" "$mbps" "$stolen"
		return 1
	fi
	MBPS[$c.$mode]+="$mbps "
	IDLE[$c.$mode]+="$idle "
	STOLEN[$c.$mode]+="$stolen "
	local steal_note=
	((stolen > 0)) && steal_note="  $stolen % stolen"
	if [[ -n ${DAEMONS[$c]} ]]; then
		cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v b="$bytes" 'BEGIN {printf "%.2f", t / hz / (b / 1e9)}')
		CPU[$c.$mode]+="$cpu "
		skb=$(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) 'BEGIN {printf "%.1f", p ? b / p / 1000 : 0}')
		SKB[$c.$mode]+="$skb "
		# Loss recoveries on a clean path are windows cut for nothing.
		[[ -n $r0 && -n $r1 ]] && rec="  $((r1 - r0)) TCP recoveries"
		printf '  %-3s run %d  %-34s %6d Mbit/s  %5.2f CPU s/GB  %5.1f kB per veth packet  %2d %% idle%s%s\n' "$mode" "$run" "${LABEL[$c]}" "$mbps" "$cpu" "$skb" "$idle" "$rec" "$steal_note"
	else
		printf '  %-3s run %d  %-34s %6d Mbit/s  %2d %% idle%s\n' "$mode" "$run" "${LABEL[$c]}" "$mbps" "$idle" "$steal_note"
	fi
}

# wakeup_ipis: the machine's rescheduling and function-call interrupts so
# far. On a VM an idle vCPU woken this way costs tens of us, so a ping-pong
# whose wake-ups cross CPUs more often is slower with the same work.
wakeup_ipis() {
	awk '$1 == "RES:" || $1 == "CAL:" {for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i} END {print s + 0}' /proc/interrupts
}

rtt() {
	local c=$1 out=$TMP/rtt.$1 p50 p99 t0 t1 i0 i1
	ns_cmd "$NS_A"
	t0=$(cpu_ticks "$c")
	i0=$(wakeup_ipis)
	# shellcheck disable=SC2086 # RTT_ARGS holds flags and paths without spaces
	waited timeout 150 "${NSCMD[@]}" "$TMP/tcprtt" -to "${RTT_ADDR[$c]}" -n "$RTT_COUNT" ${RTT_ARGS[$c]:-} >"$out" 2>>"$TMP/stderr.log" ||
		die "tcprtt through ${LABEL[$c]} failed"
	i1=$(wakeup_ipis)
	t1=$(cpu_ticks "$c")
	read -r p50 p99 <"$out"
	P50[$c]+="$p50 "
	P99[$c]+="$p99 "
	# Per round trip: the CPU time of both daemons, and the wake-up IPIs.
	RTT_CPU[$c]+="$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$RTT_COUNT" 'BEGIN {printf "%.1f", t / hz / n * 1e6}') "
	RTT_IPI[$c]+="$(awk -v i=$((i1 - i0)) -v n="$RTT_COUNT" 'BEGIN {printf "%.2f", i / n}') "
}

# Rotating the order each round, so no pair always goes first.
TUNNELS=()
for c in upstream tun tunbefore netstack before embed; do
	[[ " $PAIRS " == *" $c "* ]] && TUNNELS+=("$c")
done
order() {
	local r=$1 n=${#TUNNELS[@]} i
	for ((i = 0; i < n; i++)); do
		printf '%s ' "${TUNNELS[$(((i + r) % n))]}"
	done
}

# Handshakes first: a pair whose first handshake went out before its peer
# was up waits for wireguard-go's retry, longer than a forward's dial.
for c in "${TUNNELS[@]}"; do
	for ((i = 0; i < 30; i++)); do
		ns_cmd "$NS_A"
		# shellcheck disable=SC2086
		timeout 10 "${NSCMD[@]}" "$TMP/tcprtt" -to "${RTT_ADDR[$c]}" -n 1 ${RTT_ARGS[$c]:-} >/dev/null 2>&1 && break
		sleep 1
	done
	((i < 30)) || die "no traffic through ${LABEL[$c]} after 30 tries (logs in $TMP)"
done

echo "netem: ${NETEM:-none}; ${DURATION}s per run; $ROUNDS rounds; $(nproc) CPUs, load $LOAD; Linux $(uname -r)"
echo
echo "RTT, 1-byte TCP ping-pong x$RTT_COUNT, A -> B:"
for ((r = 0; r < ROUNDS; r++)); do
	for c in $(order "$r"); do
		rtt "$c"
	done
done
for c in "${TUNNELS[@]}"; do
	# shellcheck disable=SC2086
	read -r m lo hi <<<"$(median_range ${P50[$c]})"
	# shellcheck disable=SC2086
	read -r m99 _ _ <<<"$(median_range ${P99[$c]})"
	# shellcheck disable=SC2086
	read -r mcpu _ _ <<<"$(median_range ${RTT_CPU[$c]})"
	# shellcheck disable=SC2086
	read -r mipi _ _ <<<"$(median_range ${RTT_IPI[$c]})"
	who=daemons
	[[ $c == embed ]] && who="B's daemon"
	printf '  %-34s p50 %7.1f us (%.1f..%.1f)  p99 %7.1f us  %s %5.1f CPU us, %4.2f wake-up IPIs per round trip\n' \
		"${LABEL[$c]}" "$m" "$lo" "$hi" "$m99" "$who" "$mcpu" "$mipi"
	P50_ALL[$c]=${P50[$c]}
	P50[$c]=$m
done

for mode in $MODES; do
	echo
	echo "Throughput, ${mode%R} stream(s), $([[ $mode == *R ]] && echo "B -> A" || echo "A -> B"):"
	for ((r = 0; r < ROUNDS; r++)); do
		for c in $(order "$r"); do
			[[ $c == embed ]] || throughput "$c" "$mode" $((r + 1))
		done
		[[ -z $NETEM ]] && throughput raw "$mode" $((r + 1))
	done
done

[[ -n $PIN ]] && echo && echo "PIN=1: A's side ran on CPU 0, B's on CPU 1."
[[ -n ${MODES// /} ]] && echo && echo "Summary (median, range):"
declare -A MED=()
for mode in $MODES; do
	for c in raw "${TUNNELS[@]}"; do
		[[ -n ${MBPS[$c.$mode]:-} ]] || continue
		# shellcheck disable=SC2086
		read -r m lo hi <<<"$(median_range ${MBPS[$c.$mode]})"
		MED[$c.$mode]=$m
		printf '  %-3s %-34s %6.0f Mbit/s (%.0f..%.0f)' "$mode" "${LABEL[$c]}" "$m" "$lo" "$hi"
		if [[ -n ${CPU[$c.$mode]:-} ]]; then
			# shellcheck disable=SC2086
			read -r cm clo chi <<<"$(median_range ${CPU[$c.$mode]})"
			printf '  %5.2f CPU s/GB (%.2f..%.2f)' "$cm" "$clo" "$chi"
			# shellcheck disable=SC2086
			read -r sm _ _ <<<"$(median_range ${SKB[$c.$mode]})"
			printf '  %5.1f kB/veth packet' "$sm"
		fi
		# shellcheck disable=SC2086
		read -r im _ _ <<<"$(median_range ${IDLE[$c.$mode]})"
		printf '  %2.0f %% idle' "$im"
		# shellcheck disable=SC2086
		read -r stm _ sthi <<<"$(median_range ${STOLEN[$c.$mode]})"
		awk -v m="$stm" -v h="$sthi" 'BEGIN {if (h > 0) printf "  %.0f %% stolen (max %.0f)", m, h}'
		echo
	done
done
# ratio_line LIST_A LIST_B: the median and range of the per-round
# ratios A/B.
ratio_line() {
	local m lo hi
	# shellcheck disable=SC2046
	read -r m lo hi <<<"$(median_range $(ratios "$1" "$2"))"
	printf '%5.2f x (%.2f..%.2f)' "$m" "$lo" "$hi"
}
if [[ " ${TUNNELS[*]} " == *" upstream "* ]]; then
	echo
	echo "Against upstream wireguard-go's TUN pair, per-round ratios (median, range; issue 20's"
	echo "targets for the netstack pair: throughput >= 1.0, CPU s/GB <= 1.0, RTT p50 <= 1.1):"
	for mode in $MODES; do
		for c in tun tunbefore netstack before; do
			[[ -n ${MBPS[$c.$mode]:-} ]] || continue
			printf '  %-3s %-34s throughput %s  CPU s/GB %s\n' "$mode" "${LABEL[$c]}" \
				"$(ratio_line "${MBPS[$c.$mode]}" "${MBPS[upstream.$mode]}")" \
				"$(ratio_line "${CPU[$c.$mode]}" "${CPU[upstream.$mode]}")"
		done
	done
	for c in tun tunbefore netstack before embed; do
		[[ -n ${P50_ALL[$c]:-} ]] || continue
		if [[ $c == embed ]]; then # its CPU figure counts one daemon
			printf '  RTT p50 %-30s %s\n' "${LABEL[$c]}" "$(ratio_line "${P50_ALL[$c]}" "${P50_ALL[upstream]}")"
			continue
		fi
		printf '  RTT p50 %-30s %s  CPU per round trip %s\n' "${LABEL[$c]}" \
			"$(ratio_line "${P50_ALL[$c]}" "${P50_ALL[upstream]}")" "$(ratio_line "${RTT_CPU[$c]}" "${RTT_CPU[upstream]}")"
	done
fi
# Current against WGMESH_BEFORE, round by round: the before/after figure.
for pair in "netstack before" "tun tunbefore"; do
	read -r cur old <<<"$pair"
	[[ " ${TUNNELS[*]} " == *" $cur "* && " ${TUNNELS[*]} " == *" $old "* ]] || continue
	echo
	echo "${LABEL[$cur]} against ${LABEL[$old]}, per-round ratios (median, range):"
	for mode in $MODES; do
		printf '  %-3s throughput %s  CPU s/GB %s\n' "$mode" \
			"$(ratio_line "${MBPS[$cur.$mode]}" "${MBPS[$old.$mode]}")" \
			"$(ratio_line "${CPU[$cur.$mode]}" "${CPU[$old.$mode]}")"
	done
	printf '  RTT p50 %s  CPU per round trip %s\n' "$(ratio_line "${P50_ALL[$cur]}" "${P50_ALL[$old]}")" \
		"$(ratio_line "${RTT_CPU[$cur]}" "${RTT_CPU[$old]}")"
done

read -r IDLE1 STEAL1 TOTAL1 <<<"$(cpu_times)"
echo
awk -v i=$((IDLE1 - IDLE0)) -v s=$((STEAL1 - STEAL0)) -v t=$((TOTAL1 - TOTAL0)) \
	'BEGIN {if (t > 0) printf "Whole run: CPUs idle %.1f %%, stolen by the host %.1f %%\n", 100 * i / t, 100 * s / t}'
