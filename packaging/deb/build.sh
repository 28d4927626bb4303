#!/bin/sh
# Builds bin/wgmesh_VERSION_ARCH.deb with dpkg-deb: the static binary, the
# systemd units and sysusers entry, the man page and the shell completions.
# Usage: packaging/deb/build.sh [GOARCH]   (amd64 or arm64; default: the host's)
# The package is reproducible: every timestamp is the last commit's
# (SOURCE_DATE_EPOCH), owners are root, the binary has no local paths.
set -eu
cd "$(dirname "$0")/../.."
GO=${GO:-go}
arch=${1:-$($GO env GOARCH)}
case $arch in amd64 | arm64) ;; *) echo "build.sh: GOARCH $arch: want amd64 or arm64" >&2; exit 2 ;; esac
version=${VERSION:-$(packaging/version.sh)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH
out=${OUT:-bin}
mkdir -p "$out"
root=$(mktemp -d "${TMPDIR:-/tmp}/wgmesh-deb.XXXXXX")
trap 'rm -rf "$root" "$root.tool"' EXIT
umask 022
chmod 0755 "$root"

CGO_ENABLED=0 GOOS=linux GOARCH=$arch $GO build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X main.version=$version" -o "$root/usr/bin/wgmesh" .

install -d "$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" "$root/usr/share/man/man1" \
	"$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d" "$root/usr/share/doc/wgmesh/examples" "$root/etc/wgmesh" "$root/DEBIAN"
install -m 0644 contrib/systemd/wgmesh@.service contrib/systemd/wgmesh-tun@.service "$root/usr/lib/systemd/system/"
install -m 0644 contrib/systemd/wgmesh.sysusers "$root/usr/lib/sysusers.d/wgmesh.conf"
# The pages and scripts come from the CLI definition, by a binary for the
# host (the package's may be for another architecture).
tool="$root/usr/bin/wgmesh"
if [ "$arch" != "$($GO env GOARCH)" ]; then
	tool="$root.tool"
	CGO_ENABLED=0 $GO build -trimpath -o "$tool" .
fi
"$tool" man | gzip -9n >"$root/usr/share/man/man1/wgmesh.1.gz"
"$tool" completion bash >"$root/usr/share/bash-completion/completions/wgmesh"
"$tool" completion zsh >"$root/usr/share/zsh/vendor-completions/_wgmesh"
"$tool" completion fish >"$root/usr/share/fish/vendor_completions.d/wgmesh.fish"
rm -f "$root.tool"
install -m 0644 packaging/deb/copyright "$root/usr/share/doc/wgmesh/copyright"
install -m 0644 contrib/home.toml "$root/usr/share/doc/wgmesh/examples/home.toml"
install -m 0755 packaging/deb/postinst packaging/deb/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/deb/control >"$root/DEBIAN/control"

find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
deb="$out/wgmesh_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
