package gitops

import (
	"path/filepath"
	"sync"
)

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
