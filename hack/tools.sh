#!/usr/bin/env bash
# tools.sh builds the pinned tools and the test control plane from the Go
# module proxy into a cache outside the work tree, keyed by name, version and
# the tool module's go.sum, and links them into bin/.
#
#   hack/tools.sh [name...]   build (or reuse) the named tools, default all
#
# SLUICE_TOOLS_CACHE overrides the cache folder.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/tools}
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
# The checksum database does not know notification-controller (it answers 404);
# its tool module's go.sum pins the hashes instead.
export GONOSUMDB=${GONOSUMDB:+$GONOSUMDB,}github.com/fluxcd/notification-controller

# name | tool module under hack/tools | upstream module (for the version) |
# packages to build ("-": none, the folders only) | folders of the upstream
# module to keep (CRDs, stages)
tools=(
	"controller-gen|controller-gen|sigs.k8s.io/controller-tools|sigs.k8s.io/controller-tools/cmd/controller-gen|"
	"crd-ref-docs|crd-ref-docs|github.com/elastic/crd-ref-docs|github.com/elastic/crd-ref-docs|"
	"etcd|etcd|go.etcd.io/etcd/server/v3|.|"
	"kubernetes|kubernetes|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl|"
	"kwok|kwok|sigs.k8s.io/kwok|sigs.k8s.io/kwok/cmd/kwok|kustomize/stage"
	"argo-rollouts|argo-rollouts|github.com/argoproj/argo-rollouts|github.com/argoproj/argo-rollouts/cmd/rollouts-controller|manifests/crds"
	"source-controller|source-controller|github.com/fluxcd/source-controller|github.com/fluxcd/source-controller|config/crd/bases"
	"kustomize-controller|kustomize-controller|github.com/fluxcd/kustomize-controller|github.com/fluxcd/kustomize-controller|config/crd/bases"
	"notification-controller|notification-controller|github.com/fluxcd/notification-controller|github.com/fluxcd/notification-controller|config/crd/bases"
	"gateway-api|gateway-api|sigs.k8s.io/gateway-api|-|config/crd/standard"
)

build() {
	local name=$1 dir=$2 module=$3 pkgs=$4 keep=$5
	local src=$root/hack/tools/$dir
	local version key dest
	version=$(cd "$src" && go list -m -f '{{.Version}}' "$module")
	key=$(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)
	dest=$cache/$name-$version-$key

	if [[ ! -f $dest/.complete ]]; then
		echo "building $name $version (cached in $dest)" >&2
		local start=$SECONDS
		rm -rf "$dest.tmp"
		mkdir -p "$dest.tmp/bin"
		if [[ $pkgs == - ]]; then
			(cd "$src" && go mod download "$module")
		else
			(cd "$src" && go build -ldflags='-s -w' -o "$dest.tmp/bin/" $pkgs)
		fi
		if [[ $pkgs == . ]]; then
			mv "$dest.tmp/bin/$dir" "$dest.tmp/bin/$name" 2>/dev/null || true
		fi
		if [[ -n $keep ]]; then
			local moddir
			moddir=$(cd "$src" && go list -m -f '{{.Dir}}' "$module")
			mkdir -p "$dest.tmp/share"
			cp -R "$moddir/$keep" "$dest.tmp/share/"
			chmod -R u+w "$dest.tmp/share"
		fi
		touch "$dest.tmp/.complete"
		rm -rf "$dest"
		mv "$dest.tmp" "$dest"
		echo "built $name in $((SECONDS - start))s" >&2
	fi

	mkdir -p "$root/bin" "$root/bin/share"
	local f
	for f in "$dest"/bin/*; do
		if [[ -e $f ]]; then
			ln -sfn "$f" "$root/bin/$(basename "$f")"
		fi
	done
	if [[ -n $keep ]]; then
		ln -sfn "$dest/share" "$root/bin/share/$name"
	fi
}

want=("$@")
for entry in "${tools[@]}"; do
	IFS='|' read -r name dir module pkgs keep <<<"$entry"
	if [[ ${#want[@]} -eq 0 || " ${want[*]} " == *" $name "* ]]; then
		build "$name" "$dir" "$module" "$pkgs" "$keep"
	fi
done
