package gitops

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// NOTE: a write whose push is refused because the branch moved is made
// again on the new head. Editing again costs what the first edit cost
// (every Kustomization of a batch built before and after its edits: some
// seconds for a fleet's stable records), and a branch that others push to
// every few seconds can refuse every such attempt. An edit's outcome
// depends only on what it read. sluice's edits locate what they change by
// building the Kustomization, and read, besides what the build read, the
// folders of the files they write (a kustomization.yaml there, a Delivery
// file there already or not). When the commits that moved the branch
// changed none of those paths, no link, and none of the files the edit
// wrote, editing again would write exactly the same: the edit's changes
// are put onto the new head as they are. An edit that builds nothing (or a
// build that read through a link, or in a way not recorded) is made again.

// reads is what the builds of an edit read, as paths of the repository:
// folders with all below them, files (or paths that did not exist), and
// folders by their entries.
type reads struct {
	trees, files, entries []string
	// builds counts the builds recorded; unknown is set when one read
	// something not recorded, or outside the repository.
	builds  int
	unknown bool
}

// readRecorders holds, by working copy root, the *readRecorder of the
// edit that runs on it. The repository's lock keeps one edit per root at a
// time.
var readRecorders sync.Map

type readRecorder struct {
	sync.Mutex
	reads
}

// recordReads starts recording the reads of the builds in root; the
// returned function stops and returns them.
func recordReads(root string) func() *reads {
	root = filepath.Clean(root)
	rec := &readRecorder{}
	readRecorders.Store(root, rec)
	return func() *reads {
		readRecorders.Delete(root)
		rec.Lock()
		defer rec.Unlock()
		r := rec.reads
		return &r
	}
}

// noteBuild records what a build in root read, for the edit that runs on
// root, if any.
func noteBuild(root string, in *buildInputs) {
	v, ok := readRecorders.Load(filepath.Clean(root))
	if !ok {
		return
	}
	rec := v.(*readRecorder)
	rec.Lock()
	defer rec.Unlock()
	rec.builds++
	if in == nil || in.uncacheable {
		rec.unknown = true
		return
	}
	rel := func(p string) (string, bool) {
		r, err := filepath.Rel(root, p)
		if err != nil || !within(root, p) {
			return "", false
		}
		return filepath.ToSlash(r), true
	}
	if in.dir != "" {
		r, ok := rel(in.dir)
		if !ok {
			rec.unknown = true
			return
		}
		rec.trees = append(rec.trees, r)
	}
	for p, h := range in.others {
		r, ok := rel(p)
		switch {
		case !ok, strings.HasPrefix(h, "error"):
			rec.unknown = true
			return
		case strings.HasPrefix(h, "dir "):
			rec.entries = append(rec.entries, r)
		default:
			rec.files = append(rec.files, r)
		}
	}
}

// movedPath is a path the commits that moved a branch changed; entries is
// set when the change adds or removes it, or changes its type, so that
// its folder lists other entries.
type movedPath struct {
	path    string
	entries bool
}

// affects tells whether changing p could change what was read.
func (r *reads) affects(p movedPath) bool {
	for _, t := range r.trees {
		if overlaps(t, p.path) {
			return true
		}
	}
	for _, f := range r.files {
		if overlaps(f, p.path) {
			return true
		}
	}
	for _, d := range r.entries {
		if p.entries && under(d, p.path) || under(p.path, d) {
			return true
		}
	}
	return false
}

// overlaps tells whether the paths a and b are the same, or one holds the
// other.
func overlaps(a, b string) bool { return under(a, b) || under(b, a) }

// under tells whether the path p is dir or below it; "." holds everything.
func under(dir, p string) bool {
	return dir == "." || p == dir || strings.HasPrefix(p, dir+"/")
}

// refused is a commit whose push was refused because the branch moved:
// what it was made on, what it changed, and what its edit read.
type refused struct {
	base, commit plumbing.Hash
	message      string
	reads        *reads
}

// replayable tells whether the edit of r, made again on head, would write
// what it wrote on r.base: its builds recorded everything they read, and
// the commits from r.base to head changed none of it, and none of what
// the edit wrote.
func (r *refused) replayable(repo *git.Repository, head plumbing.Hash) (ours []*object.Change, ok bool, err error) {
	if r == nil || r.reads.unknown || r.reads.builds == 0 {
		return nil, false, nil
	}
	baseTree, err := treeOf(repo, r.base)
	if err != nil {
		return nil, false, err
	}
	headTree, err := treeOf(repo, head)
	if err != nil {
		return nil, false, err
	}
	commitTree, err := treeOf(repo, r.commit)
	if err != nil {
		return nil, false, err
	}
	moved, err := object.DiffTree(baseTree, headTree)
	if err != nil {
		return nil, false, err
	}
	if ours, err = object.DiffTree(baseTree, commitTree); err != nil {
		return nil, false, err
	}
	for _, o := range ours {
		if o.To.Name != "" && o.To.TreeEntry.Mode != filemode.Regular && o.To.TreeEntry.Mode != filemode.Executable {
			// The edits write files only; anything else is made again.
			return nil, false, nil
		}
	}
	for _, m := range moved {
		if m.From.TreeEntry.Mode == filemode.Symlink || m.To.TreeEntry.Mode == filemode.Symlink {
			// A link changes what is read through it, wherever that is.
			return nil, false, nil
		}
		p := movedPath{path: m.To.Name, entries: m.From.Name == "" || m.To.Name == "" ||
			m.From.TreeEntry.Mode != m.To.TreeEntry.Mode}
		if p.path == "" {
			p.path = m.From.Name
		}
		if r.reads.affects(p) {
			return nil, false, nil
		}
		for _, o := range ours {
			// The edit read the folder of each file it wrote.
			if written := changePath(o); overlaps(written, p.path) || under(path.Dir(written), p.path) {
				return nil, false, nil
			}
		}
	}
	return ours, true, nil
}

func changePath(c *object.Change) string {
	if c.To.Name != "" {
		return c.To.Name
	}
	return c.From.Name
}

func treeOf(repo *git.Repository, commit plumbing.Hash) (*object.Tree, error) {
	c, err := repo.CommitObject(commit)
	if err != nil {
		return nil, err
	}
	return c.Tree()
}

// replay commits the changes ours (from a refused commit) onto head, the
// working copy's index and files as they would be had the edit run again
// on head, and returns the commit.
func replay(repo *git.Repository, wt *git.Worktree, head plumbing.Hash, ours []*object.Change, message string, opts *git.CommitOptions) (plumbing.Hash, error) {
	root := wt.Filesystem.Root()
	touched(root)
	if err := wt.Checkout(&git.CheckoutOptions{Hash: head, Force: true}); err != nil {
		return plumbing.ZeroHash, &workingCopyError{fmt.Errorf("checking out %s: %w", head, err)}
	}
	idx, err := repo.Storer.Index()
	if err != nil {
		return plumbing.ZeroHash, &workingCopyError{err}
	}
	for _, c := range ours {
		name := changePath(c)
		file, err := securePath(root, name)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if c.To.Name == "" {
			if _, err := idx.Remove(name); err != nil && !errors.Is(err, index.ErrEntryNotFound) {
				return plumbing.ZeroHash, &workingCopyError{err}
			}
			if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
				return plumbing.ZeroHash, err
			}
			continue
		}
		mode := c.To.TreeEntry.Mode
		if err := writeBlob(repo, c.To.TreeEntry.Hash, file, mode); err != nil {
			return plumbing.ZeroHash, err
		}
		e, err := idx.Entry(name)
		if errors.Is(err, index.ErrEntryNotFound) {
			e = idx.Add(name)
		} else if err != nil {
			return plumbing.ZeroHash, &workingCopyError{err}
		}
		e.Hash, e.Mode = c.To.TreeEntry.Hash, mode
	}
	if err := repo.Storer.SetIndex(idx); err != nil {
		return plumbing.ZeroHash, &workingCopyError{err}
	}
	commit, err := wt.Commit(message, opts)
	if err != nil {
		return plumbing.ZeroHash, &workingCopyError{fmt.Errorf("committing: %w", err)}
	}
	return commit, nil
}

// writeBlob writes the blob h to file, making its folder when it has none.
func writeBlob(repo *git.Repository, h plumbing.Hash, file string, mode filemode.FileMode) error {
	blob, err := repo.BlobObject(h)
	if err != nil {
		return &workingCopyError{err}
	}
	rd, err := blob.Reader()
	if err != nil {
		return &workingCopyError{err}
	}
	defer func() { _ = rd.Close() }()
	data, err := io.ReadAll(rd)
	if err != nil {
		return &workingCopyError{err}
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	if err := writeFile(file, data); err != nil {
		return err
	}
	perm := os.FileMode(0o644)
	if mode == filemode.Executable {
		perm = 0o755
	}
	return os.Chmod(file, perm)
}
