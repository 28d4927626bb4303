#!/bin/sh
# Builds the release archives into ${OUT:-bin/release}: for each
# GOOS/GOARCH of PLATFORMS a static binary with the README, the man page,
# the shell completions and the systemd units, as
# wgmesh-VERSION-OS-ARCH.tar.gz (.zip for windows), and SHA256SUMS.
# Reproducible: -trimpath, no build ID, no VCS stamp, every timestamp the
# last commit's (SOURCE_DATE_EPOCH), owners 0, names sorted; the same
# commit gives the same bytes wherever it is checked out.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64 freebsd/amd64 freebsd/arm64}
version=${VERSION:-$(packaging/version.sh)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH TZ=UTC LC_ALL=C
out=${OUT:-bin/release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/wgmesh-release.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 022

# Man page and completions from the CLI definition, by a host binary.
CGO_ENABLED=0 $GO build -trimpath -o "$work/tool" .
mkdir -p "$work/extra/completion" "$work/extra/systemd"
"$work/tool" man >"$work/extra/wgmesh.1"
"$work/tool" completion bash >"$work/extra/completion/wgmesh.bash"
"$work/tool" completion zsh >"$work/extra/completion/_wgmesh"
"$work/tool" completion fish >"$work/extra/completion/wgmesh.fish"
cp README.md "$work/extra/"
cp contrib/home.toml "$work/extra/"
cp contrib/systemd/wgmesh@.service contrib/systemd/wgmesh-tun@.service contrib/systemd/wgmesh.sysusers "$work/extra/systemd/"

archives=""
for p in $PLATFORMS; do
	os=${p%/*} arch=${p#*/}
	name="wgmesh-$version-$os-$arch"
	dir="$work/$name"
	exe=wgmesh
	[ "$os" = windows ] && exe=wgmesh.exe
	mkdir -p "$dir"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch $GO build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X main.version=$version" -o "$dir/$exe" .
	cp -R "$work/extra/." "$dir/"
	find "$dir" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
	if [ "$os" = windows ]; then
		rm -f "$out/$name.zip"
		(cd "$work" && find "$name" | sort | zip -X -q -D "$out/$name.zip" -@)
		archives="$archives $name.zip"
	else
		tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
			--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
		archives="$archives $name.tar.gz"
	fi
	echo "$out/${archives##* }"
done
(cd "$out" && sha256sum $archives >SHA256SUMS)
echo "$out/SHA256SUMS"
