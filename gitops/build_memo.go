package gitops

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// NOTE: the edits of a batch build their Kustomizations again and again:
// each adoption and each stable record builds its folder before its edit
// and after it, and the next edit of the same folder builds again what the
// last one checked; a park check for each Delivery of a revision builds
// the same folder each time. A build is remembered with what it read: the
// files and folders below the Kustomization's path, whole, and the files,
// folders and .sourceignore files elsewhere it looked at. A build whose
// inputs all read the same again is the same build.

// builds remembers the last build of each Kustomization of each working
// copy; past maxMemoBuilds, it starts afresh.
var builds = struct {
	sync.Mutex
	m map[string]memoBuild
}{m: map[string]memoBuild{}}

// maxMemoBuilds bounds the builds remembered: the build of a folder of ten
// apps (twenty objects) holds about 130 KiB.
const maxMemoBuilds = 128

type memoBuild struct {
	objs   []built
	inputs buildInputs
}

// build builds the Kustomization's path of the repository at root (see
// buildFiles), or returns the same build again when nothing it read
// changed. The objects of a remembered build are shared: no caller changes
// them.
func build(root string, k Kustomization) ([]built, error) {
	key, ok := memoKey(root, k)
	if ok {
		builds.Lock()
		m, found := builds.m[key]
		builds.Unlock()
		if found && m.inputs.unchanged() {
			noteBuild(root, &m.inputs)
			return m.objs, nil
		}
	}
	inputs := &buildInputs{}
	objs, err := buildFiles(root, k, inputs)
	noteBuild(root, inputs)
	if err != nil || !ok || inputs.uncacheable {
		return objs, err
	}
	builds.Lock()
	defer builds.Unlock()
	if len(builds.m) >= maxMemoBuilds {
		clear(builds.m)
	}
	builds.m[key] = memoBuild{objs: objs, inputs: *inputs}
	return objs, nil
}

// forgetStale forgets the remembered builds of keys (see memoKey) whose
// inputs changed since: they are made again when asked for, and would be
// held until then.
func forgetStale(keys []string) {
	for _, key := range keys {
		builds.Lock()
		m, found := builds.m[key]
		builds.Unlock()
		if !found || m.inputs.unchanged() {
			continue
		}
		// NOTE: a build remembered meanwhile under the same key goes too;
		// it is made again when asked for.
		builds.Lock()
		delete(builds.m, key)
		builds.Unlock()
	}
}

// memoKey is what a build of k in root is remembered by: the repository
// and what of the Kustomization a build reads.
func memoKey(root string, k Kustomization) (string, bool) {
	var flux any
	if k.Flux != nil {
		// Its name too: a build's errors give it.
		flux = []any{k.Flux.Namespace, k.Flux.Name, k.Flux.Spec}
	}
	spec, err := json.Marshal(struct {
		Root, Path, Ignore string
		Flux               any
		Vars               map[string]string
	}{filepath.Clean(root), k.Path, k.Ignore, flux, k.Vars})
	if err != nil {
		return "", false
	}
	sum := sha256.Sum256(spec)
	return hex.EncodeToString(sum[:]), true
}

// buildInputs is what a build read: the folder of the Kustomization's path
// with all below it, and other paths: files by content, folders by their
// entries, and paths that did not exist.
type buildInputs struct {
	dir     string
	dirHash string
	others  map[string]string
	// uncacheable: the build looked at something in a way not
	// recorded.
	uncacheable bool
}

// readDir records the folder dir, with all below it. A folder that holds
// links is not recorded whole: what kustomize reads through a link is
// elsewhere.
func (in *buildInputs) readDir(dir string) error {
	if in == nil {
		return nil
	}
	h, links, err := treeHash(dir)
	in.dir, in.dirHash = dir, h
	if links {
		in.uncacheable = true
	}
	return err
}

// read records what the path p holds now, unless dir holds it.
func (in *buildInputs) read(p string) {
	if in == nil || in.dir != "" && within(in.dir, p) {
		return
	}
	if !filepath.IsAbs(p) {
		in.uncacheable = true
		return
	}
	if in.others == nil {
		in.others = map[string]string{}
	}
	if _, ok := in.others[p]; !ok {
		in.others[p] = pathHash(p)
	}
}

func (in *buildInputs) markUncacheable() {
	if in != nil {
		in.uncacheable = true
	}
}

// unchanged tells whether every input reads the same again.
func (in buildInputs) unchanged() bool {
	if h, _, err := treeHash(in.dir); err != nil || h != in.dirHash {
		return false
	}
	for p, h := range in.others {
		if pathHash(p) != h {
			return false
		}
	}
	return true
}

// pathHash sums what the path p holds: a file's content, a folder's
// entries, or that it does not exist.
func pathHash(p string) string {
	info, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "absent"
	case err != nil:
		return "error " + err.Error()
	case info.IsDir():
		entries, err := os.ReadDir(p)
		if err != nil {
			return "error " + err.Error()
		}
		h := sha256.New()
		for _, e := range entries {
			h.Write([]byte(e.Name() + "\x00" + e.Type().String() + "\x00"))
		}
		return "dir " + hex.EncodeToString(h.Sum(nil))
	default:
		data, err := os.ReadFile(p)
		if err != nil {
			return "error " + err.Error()
		}
		sum := sha256.Sum256(data)
		return "file " + hex.EncodeToString(sum[:])
	}
}

// treeHash sums the folder dir and all below it: every entry's path and
// type, every file's content, every link's target; links tells whether it
// holds any.
func treeHash(dir string) (_ string, links bool, _ error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Write([]byte(rel + "\x00" + d.Type().String() + "\x00"))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			links = true
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Write([]byte(target + "\x00"))
		case d.Type().IsRegular():
			return hashFile(h, p)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), links, err
}

func hashFile(h hash.Hash, p string) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	h.Write(sum[:])
	return nil
}

// recordingFS is the file system kustomize builds from: it records in
// inputs what kustomize looks at outside the Kustomization's folder (the
// generated kustomization, in memory, is of the folder), and fails to read
// a file whose aliases expand without bound (see boundedFile), err keeping
// why.
type recordingFS struct {
	filesys.FileSystem
	root   string
	inputs *buildInputs
	err    error
}

func (f *recordingFS) ReadFile(path string) ([]byte, error) {
	// Recorded before it is read: a file that changes meanwhile reads
	// otherwise at the next build.
	f.inputs.read(path)
	data, err := f.FileSystem.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := boundedFile(f.root, path, data); err != nil {
		f.err = err
		return nil, err
	}
	return data, nil
}

func (f *recordingFS) Exists(path string) bool {
	f.inputs.read(path)
	return f.FileSystem.Exists(path)
}

func (f *recordingFS) IsDir(path string) bool {
	f.inputs.read(path)
	return f.FileSystem.IsDir(path)
}

func (f *recordingFS) ReadDir(path string) ([]string, error) {
	f.inputs.read(path)
	return f.FileSystem.ReadDir(path)
}

func (f *recordingFS) CleanedAbs(path string) (filesys.ConfirmedDir, string, error) {
	f.inputs.read(path)
	return f.FileSystem.CleanedAbs(path)
}

func (f *recordingFS) Open(path string) (filesys.File, error) {
	f.inputs.markUncacheable()
	return f.FileSystem.Open(path)
}

func (f *recordingFS) Glob(pattern string) ([]string, error) {
	f.inputs.markUncacheable()
	return f.FileSystem.Glob(pattern)
}

func (f *recordingFS) Walk(path string, walkFn filepath.WalkFunc) error {
	f.inputs.markUncacheable()
	return f.FileSystem.Walk(path, walkFn)
}
