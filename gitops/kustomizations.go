package gitops

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// removeReplicasEntry removes the entry for name from the replicas field of
// the kustomization in dir, if there is one.
func removeReplicasEntry(root, dir, name string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	list := k.Field("replicas")
	if list == nil {
		return false, nil
	}
	elems, err := list.Value.Elements()
	if err != nil {
		return false, err
	}
	kept := list.Value.YNode().Content[:0]
	removed := false
	for _, e := range elems {
		if n := e.Field("name"); n != nil && n.Value.YNode().Value == name {
			removed = true
			continue
		}
		kept = append(kept, e.YNode())
	}
	if !removed {
		return false, nil
	}
	list.Value.YNode().Content = kept
	if len(kept) == 0 {
		if err := k.PipeE(yaml.Clear("replicas")); err != nil {
			return false, err
		}
	}
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// registerResource lists the repository file rel in the resources of
// dir's kustomization, when dir has one, by its path from dir.
func registerResource(root, dir, rel string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	entry, err := filepath.Rel(filepath.FromSlash(dir), filepath.FromSlash(rel))
	if err != nil {
		return false, err
	}
	entry = filepath.ToSlash(entry)
	resources := k.Field("resources")
	if resources != nil {
		elems, err := resources.Value.Elements()
		if err != nil {
			return false, err
		}
		for _, e := range elems {
			if path.Join(dir, e.YNode().Value) == rel {
				return false, nil
			}
		}
		resources.Value.YNode().Content = append(resources.Value.YNode().Content, yaml.NewStringRNode(entry).YNode())
	} else if err := k.PipeE(yaml.SetField("resources", yaml.NewListRNode(entry))); err != nil {
		return false, err
	}
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// resolved is path with its symbolic links resolved, or path when they
// cannot be.
func resolved(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

// readKustomization reads the kustomization.yaml of dir; k is nil when dir
// has none.
func readKustomization(root, dir string) (file string, k *yaml.RNode, err error) {
	abs, err := securePath(root, dir)
	if err != nil {
		return "", nil, err
	}
	file = findKustomization(abs)
	if file == "" {
		return "", nil, nil
	}
	if target, err := filepath.EvalSymlinks(file); err != nil || !within(resolved(root), target) {
		return "", nil, fmt.Errorf("%w: %s is a symbolic link that leaves the repository", ErrCannotEdit, relTo(root, file))
	}
	docs, err := readDocuments(file)
	if err != nil {
		return "", nil, err
	}
	if len(docs) != 1 {
		return "", nil, fmt.Errorf("%w: %s holds %d documents, not one kustomization", ErrCannotEdit, relTo(root, file), len(docs))
	}
	return file, docs[0], nil
}

// unregisterResource removes the repository file rel from the resources
// of dir's kustomization, when dir has one that lists it.
func unregisterResource(root, dir, rel string) (bool, error) {
	kfile, k, err := readKustomization(root, dir)
	if err != nil || k == nil {
		return false, err
	}
	resources := k.Field("resources")
	if resources == nil {
		return false, nil
	}
	content := resources.Value.YNode().Content
	kept := content[:0]
	for _, e := range content {
		if path.Join(dir, e.Value) != rel {
			kept = append(kept, e)
		}
	}
	if len(kept) == len(content) {
		return false, nil
	}
	resources.Value.YNode().Content = kept
	return true, writeDocuments(kfile, []*yaml.RNode{k})
}

// listingKustomization returns the repository folder, from the
// Kustomization's path down, whose kustomization lists the repository
// file rel among its resources: the file's own folder usually, an overlay
// that takes one file of a sibling folder sometimes. It is the file's
// folder when no kustomization lists it (Flux generates one that does).
func listingKustomization(root, kpath, rel string) string {
	chain := kustomizationChain(root, kpath, func(_, field, entry string) bool {
		return field == "resources" && entry == rel
	})
	if len(chain) == 0 {
		return path.Dir(rel)
	}
	return chain[len(chain)-1]
}

// kustomizationChain walks the kustomizations from the Kustomization's path
// down through their resources, components and bases, depth first, and
// returns the folders from kpath to the first whose kustomization has an
// entry (a repository path) for which found holds; nil when none has.
func kustomizationChain(root, kpath string, found func(dir, field, entry string) bool) []string {
	seen := map[string]bool{}
	var walk func(dir string, trail []string) []string
	walk = func(dir string, trail []string) []string {
		dir = path.Clean(dir)
		if seen[dir] || len(seen) > 1000 {
			return nil
		}
		seen[dir] = true
		_, k, err := readKustomization(root, dir)
		if err != nil || k == nil {
			return nil
		}
		trail = append(trail, dir)
		var entries []string
		for _, field := range []string{"resources", "components", "bases"} {
			f := k.Field(field)
			if f == nil {
				continue
			}
			elems, _ := f.Value.Elements()
			for _, e := range elems {
				entry := path.Join(dir, filepath.ToSlash(e.YNode().Value))
				if found(dir, field, entry) {
					return trail
				}
				entries = append(entries, entry)
			}
		}
		for _, entry := range entries {
			if chain := walk(entry, slices.Clone(trail)); chain != nil {
				return chain
			}
		}
		return nil
	}
	return walk(kpath, nil)
}

// kustomizationFiles are the names kustomize accepts, in its order.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

func findKustomization(dir string) string {
	for _, name := range kustomizationFiles {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return ""
}
