#!/bin/sh
# Prints the version of this tree for releases and packages: the tag
# (v1.2.3 -> 1.2.3), else 0.0.0~gitYYYYMMDD.HASH from the last commit, with
# +dirty when the tree has changes. The same tree always prints the same.
set -eu
cd "$(dirname "$0")/.."
if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
	v=${tag#v}
else
	v="0.0.0~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d).$(git rev-parse --short=12 HEAD)"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	v="$v+dirty"
fi
echo "$v"
