# Shared by the bench scripts: a two-member peer book and a wgmesh TUN member.
# Sourced after the script has defined start, wait_for and TMP.

# pair_book BIN OUT KEY_A KEY_B MESH_PREFIX UNDERLAY_PREFIX PORT: write a book
# of members alpha (.1) and beta (.2) of MESH_PREFIX.0/24 with endpoints
# UNDERLAY_PREFIX.1:PORT and .2:PORT, and check it with BIN. MTU: the
# book's mtu (default 1420).
pair_book() {
	local bin=$1 out=$2 key_a=$3 key_b=$4 mesh=$5 underlay=$6 port=$7
	cat >"$out" <<BOOK
format = 1

[mesh]
networks = ["$mesh.0/24"]
mtu = ${MTU:-1420}

[[peer]]
name = "alpha"
public_key = "$("$bin" key public --key "$key_a")"
addresses = ["$mesh.1"]
endpoint = "$underlay.1:$port"

[[peer]]
name = "beta"
public_key = "$("$bin" key public --key "$key_b")"
addresses = ["$mesh.2"]
endpoint = "$underlay.2:$port"
BOOK
	"$bin" book check "$out" >/dev/null
}

# tun_member BIN BOOK NS IF KEY ADDR: start `wgmesh up --mode tun` as IF in
# namespace NS and wait until IF holds ADDR.
tun_member() {
	local bin=$1 book=$2 ns=$3 ifname=$4 key=$5 addr=$6
	start "$ifname" "$ns" "$bin" up --book "$book" --key "$key" \
		--mode tun --interface "$ifname" --control "$TMP/$ifname.ctl" --log-level warn
	wait_for "wgmesh $ifname" "${PID[$ifname]}" \
		sh -c "ip -n '$ns' -o addr show dev '$ifname' | grep -q ' $addr/'"
}

# sockets_free IFNAME...: dies when a UAPI socket of one of these names
# exists. Both namespaces share /var/run/wireguard, so `wg set` would
# configure that other daemon instead of ours.
sockets_free() {
	local name
	for name in "$@"; do
		[[ ! -e /var/run/wireguard/$name.sock ]] ||
			die "/var/run/wireguard/$name.sock exists: another wireguard-go or wgmesh runs $name (stop it), or a crashed one left it (remove it)"
	done
}

# ns_pids: every process in the namespaces NS_A and NS_B, also one started
# just before a signal arrived and so missing from PID.
ns_pids() {
	ip netns pids "$NS_A" 2>/dev/null
	ip netns pids "$NS_B" 2>/dev/null
}

# pair_cleanup SCRIPT IFNAME...: the EXIT trap of the netstack and rules
# pairs. It stops CHILD and every process of PID and of the namespaces
# (TERM, then KILL after 5 s), removes the UAPI sockets of the IFNAMEs it
# started, deletes the namespaces and keeps TMP only with KEEP_LOGS=1 or
# after a failure. stderr goes back to fd 3, the script's own.
pair_cleanup() {
	local rc=$? script=$1 pid i name
	shift
	set +e
	exec 2>&3
	trap - EXIT INT TERM HUP ERR
	[[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null
	for pid in "${PID[@]}" $(ns_pids); do
		kill -TERM "$pid" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		[[ -z $(ns_pids) ]] && break
		sleep 0.1
	done
	for pid in "${PID[@]}" $(ns_pids); do
		kill -KILL "$pid" 2>/dev/null
	done
	for name in "$@"; do
		[[ -n ${PID[$name]:-} ]] && rm -f "/var/run/wireguard/$name.sock"
	done
	ip netns del "$NS_A" 2>/dev/null
	ip netns del "$NS_B" 2>/dev/null
	if [[ ${KEEP_LOGS:-0} == 1 ]] || ((rc != 0 && rc < 128)); then
		echo "$script: logs kept in $TMP" >&2
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
