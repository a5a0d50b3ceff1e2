package gitops

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
)

// NOTE: the edits of a batch that share a commit (see coalesce) mostly
// edit the same folders: a revision adopting ten apps of a folder, or
// recording their stable templates, made ten edits that each built the
// folder to find what to edit and built it again to check the result, so
// the builds of a batch grew as the square of a folder's apps. In a batch,
// the edits find what they edit in the build of the tree as the batch found
// it (what one edit changes, another does not look for: each edits its own
// objects, and reads the files it edits afresh), and the checks of what Flux
// will build run once per Kustomization, on the batch's result, before
// anything is committed. A failing check fails the batch; the write it
// belongs to is written on its own, checked at once, and the others make the
// batch again (writeTogether).

// editBatches holds, by working copy, the batch of edits under way.
var editBatches = struct {
	sync.Mutex
	m map[string]*editBatch
}{m: map[string]*editBatch{}}

// editBatch is what a batch of edits found and has to check.
type editBatch struct {
	// current is the index of the edit being made.
	current int
	// located holds, by memoKey, the builds the batch's edits started
	// from.
	located map[string][]built
	checks  []buildCheck
}

// buildCheck is an edit's check of what Flux will build.
type buildCheck struct {
	index int
	k     Kustomization
	// broken says what the edit did when the build fails.
	broken func(err error) error
	check  func(after []built) error
}

// failedEdit is the edit at index of a batch failing.
type failedEdit struct {
	index int
	err   error
}

func (e *failedEdit) Error() string { return e.err.Error() }
func (e *failedEdit) Unwrap() error { return e.err }

// inBatch runs edits, the edits of one batch on the working copy at root,
// edit(i) making the i-th, and then their checks. It reports which edits
// changed the tree; an edit or check that fails is a *failedEdit naming it.
func inBatch(root string, n int, edit func(i int) (bool, error)) ([]bool, error) {
	root = filepath.Clean(root)
	b := &editBatch{located: map[string][]built{}}
	editBatches.Lock()
	editBatches.m[root] = b
	editBatches.Unlock()
	defer func() {
		editBatches.Lock()
		delete(editBatches.m, root)
		editBatches.Unlock()
	}()

	changed := make([]bool, n)
	for i := range n {
		b.current = i
		c, err := edit(i)
		if err != nil {
			return nil, &failedEdit{index: i, err: err}
		}
		changed[i] = c
	}
	// The builds the edits started from are not needed by the checks,
	// and those whose folders the edits changed are not needed again: a
	// fleet's batch holds a hundred of them, remembered until the checks'
	// builds take their place.
	forgetStale(slices.Collect(maps.Keys(b.located)))
	clear(b.located)
	after := map[string][]built{}
	for _, c := range b.checks {
		key, _ := memoKey(root, c.k)
		objs, ok := after[key]
		if !ok {
			var err error
			if objs, err = build(root, c.k); err != nil {
				return nil, &failedEdit{index: c.index, err: c.broken(err)}
			}
			after[key] = objs
		}
		if err := c.check(objs); err != nil {
			return nil, &failedEdit{index: c.index, err: err}
		}
	}
	return changed, nil
}

// batchOf returns the batch of edits under way on root, if any.
func batchOf(root string) *editBatch {
	editBatches.Lock()
	defer editBatches.Unlock()
	return editBatches.m[filepath.Clean(root)]
}

// locate returns the build of k in which an edit finds what it edits: the
// tree as it is, or in a batch of edits, as the batch found it.
func locate(root string, k Kustomization) ([]built, error) {
	b := batchOf(root)
	key, ok := memoKey(root, k)
	if b == nil || !ok {
		return build(root, k)
	}
	if objs, found := b.located[key]; found {
		return objs, nil
	}
	objs, err := build(root, k)
	if err == nil {
		b.located[key] = objs
	}
	return objs, err
}

// checkBuild runs check on what Flux builds of k once an edit is made: objs,
// the build the edit started from, when it changed nothing, or the build
// of the tree now; in a batch of edits, the build of the batch's result,
// once all its edits are made. broken says what the edit did when that
// build fails.
func checkBuild(root string, k Kustomization, objs []built, changed bool, broken func(err error) error, check func(after []built) error) error {
	if b := batchOf(root); b != nil {
		if _, ok := memoKey(root, k); !ok {
			return fmt.Errorf("cannot check the build of %s", k.Path)
		}
		b.checks = append(b.checks, buildCheck{index: b.current, k: k, broken: broken, check: check})
		return nil
	}
	after := objs
	if changed {
		var err error
		if after, err = build(root, k); err != nil {
			return broken(err)
		}
	}
	return check(after)
}
