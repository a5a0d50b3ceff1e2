package gitops

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sync"
)

// NOTE: a write checks out the branch's head and runs its edits on it. The
// edits of a batch (a park check for each of a hundred Deliveries of one
// revision) each build their Kustomization from the same files until one
// of them writes a file. Until then, a build of the same Kustomization at
// the same commit is the same build: it is made once.

// pristine holds, by working copy root, the commit its files are a
// checkout of, from the checkout until an edit writes a file or the
// working copy is cloned again.
var pristine sync.Map

// checkedOut records that the working copy at root holds exactly commit,
// until a file below root is written.
func checkedOut(root, commit string) {
	pristine.Store(filepath.Clean(root), commit)
}

// isCheckoutOf tells whether the working copy at root holds exactly
// commit: checked out, and nothing written since.
func isCheckoutOf(root, commit string) bool {
	c, ok := pristine.Load(filepath.Clean(root))
	return ok && c == commit
}

// touched records that the file at path was written or removed: the
// working copy that holds it is a checkout of its commit no longer.
func touched(path string) {
	pristine.Range(func(root, _ any) bool {
		if within(root.(string), path) {
			pristine.Delete(root)
		}
		return true
	})
}

// builds remembers the builds of pristine working copies, by commit and
// Kustomization; past maxMemoBuilds it starts afresh.
var builds = struct {
	sync.Mutex
	m map[string]buildResult
}{m: map[string]buildResult{}}

const maxMemoBuilds = 512

type buildResult struct {
	objs []built
	err  error
}

// memoKey is what a build of k in the working copy root is remembered by,
// or "" when the working copy was written to since its checkout. The
// objects of a remembered build are shared: no caller changes them.
func memoKey(root string, k Kustomization) string {
	commit, ok := pristine.Load(filepath.Clean(root))
	if !ok {
		return ""
	}
	spec, err := json.Marshal(struct {
		Path, Ignore string
		Flux         any
		Vars         map[string]string
	}{k.Path, k.Ignore, fluxSpec(k), k.Vars})
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(spec)
	return root + "\x00" + commit.(string) + "\x00" + hex.EncodeToString(sum[:])
}

// fluxSpec is what of the Flux Kustomization a build reads, and its name,
// which its errors give.
func fluxSpec(k Kustomization) any {
	if k.Flux == nil {
		return nil
	}
	return []any{k.Flux.Namespace, k.Flux.Name, k.Flux.Spec}
}

// build builds the Kustomization's path of the repository at root (see
// buildFiles), once per commit of a pristine working copy.
func build(root string, k Kustomization) ([]built, error) {
	key := memoKey(root, k)
	if key == "" {
		return buildFiles(root, k)
	}
	builds.Lock()
	r, ok := builds.m[key]
	builds.Unlock()
	if ok {
		return r.objs, r.err
	}
	objs, err := buildFiles(root, k)
	builds.Lock()
	defer builds.Unlock()
	if len(builds.m) >= maxMemoBuilds {
		clear(builds.m)
	}
	builds.m[key] = buildResult{objs, err}
	return objs, err
}
