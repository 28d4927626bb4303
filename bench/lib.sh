# Shared by the bench scripts: a two-member peer book and a wgmesh TUN member.
# Sourced after the script has defined start, wait_for and TMP.

# pair_book BIN OUT KEY_A KEY_B MESH_PREFIX UNDERLAY_PREFIX PORT: write a book
# of members alpha (.1) and beta (.2) of MESH_PREFIX.0/24 with endpoints
# UNDERLAY_PREFIX.1:PORT and .2:PORT, and check it with BIN.
pair_book() {
	local bin=$1 out=$2 key_a=$3 key_b=$4 mesh=$5 underlay=$6 port=$7
	cat >"$out" <<BOOK
format = 1

[mesh]
networks = ["$mesh.0/24"]
mtu = 1420

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
