package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// ErrCannotEdit: sluice cannot make the change safely; the error says which
// line a human must change.
var ErrCannotEdit = errors.New("sluice cannot edit this safely")

// kustomizationFiles are the names kustomize accepts, in its order.
var kustomizationFiles = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// ObjectID names an object as a Kustomization builds it.
type ObjectID struct {
	Kind, Namespace, Name string
}

func (id ObjectID) String() string {
	if id.Namespace == "" {
		return id.Kind + "/" + id.Name
	}
	return id.Kind + "/" + id.Namespace + "/" + id.Name
}

// matches tells whether id names the object other: same kind and name, and
// the same namespace unless either leaves it to a kustomization (a built
// namespace may come from a kustomization or Flux's targetNamespace).
func (id ObjectID) matches(other ObjectID) bool {
	return id.Kind == other.Kind && id.Name == other.Name &&
		(id.Namespace == "" || other.Namespace == "" || id.Namespace == other.Namespace)
}

// built is an object of a build, with the repository file that defines it.
type built struct {
	id   ObjectID
	file string
	obj  *yaml.RNode
}

// securePath joins a repository-relative path to root, refusing to leave
// the repository through .. or symlinks.
func securePath(root, path string) (string, error) {
	p, err := securejoin.SecureJoin(root, path)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", path, err)
	}
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("path %q leaves the repository", path)
	}
	return p, nil
}

func findKustomization(dir string) string {
	for _, name := range kustomizationFiles {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return ""
}

// build builds the Kustomization path of the repository at root as
// kustomize-controller does, and tells for each object the repository file
// that defines it, from kustomize's origin annotations. A folder without a
// kustomization.yaml is built from the manifests it holds, as Flux generates
// one. The work tree is left as it was.
func build(root, path string) ([]built, error) {
	dir, err := securePath(root, path)
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("the Kustomization's path %s is not a folder of the repository", path)
	}

	// Build with origin annotations, through a kustomization.yaml that asks
	// for them: the folder's own, put back as it was afterwards, or the one
	// Flux would generate, removed afterwards.
	kfile := findKustomization(dir)
	var k *yaml.RNode
	if kfile == "" {
		kfile = filepath.Join(dir, "kustomization.yaml")
		resources, err := manifestsIn(dir)
		if err != nil {
			return nil, err
		}
		k = yaml.NewMapRNode(&map[string]string{
			"apiVersion": "kustomize.config.k8s.io/v1beta1",
			"kind":       "Kustomization",
		})
		if err := k.PipeE(yaml.SetField("resources", yaml.NewListRNode(resources...))); err != nil {
			return nil, err
		}
		defer os.Remove(kfile)
	} else {
		original, err := os.ReadFile(kfile)
		if err != nil {
			return nil, err
		}
		defer func() { _ = os.WriteFile(kfile, original, 0o644) }()
		if k, err = yaml.Parse(string(original)); err != nil {
			return nil, fmt.Errorf("%s: %w", relTo(root, kfile), err)
		}
	}
	if err := k.PipeE(yaml.SetField("buildMetadata", yaml.NewListRNode("originAnnotations"))); err != nil {
		return nil, err
	}
	if err := os.WriteFile(kfile, []byte(k.MustString()), 0o644); err != nil {
		return nil, err
	}

	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", path, err)
	}
	var out []built
	for _, res := range resMap.Resources() {
		b, err := fromResource(root, dir, res)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// fileOf returns the repository file that defines id in the build objs, or
// "" when id is not in it or kustomize cannot tell.
func fileOf(objs []built, id ObjectID) string {
	for _, o := range objs {
		if o.id.matches(id) {
			return o.file
		}
	}
	return ""
}

func fromResource(root, dir string, res *resource.Resource) (built, error) {
	origin, err := res.GetOrigin()
	if err != nil {
		return built{}, err
	}
	b := built{
		id:  ObjectID{Kind: res.GetKind(), Namespace: res.GetNamespace(), Name: res.GetName()},
		obj: &res.RNode,
	}
	if origin != nil && origin.Repo == "" && origin.Path != "" {
		b.file = relTo(root, filepath.Join(dir, origin.Path))
	}
	return b, nil
}

func relTo(root, path string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(rel)
}

// manifestsIn lists what Flux's generated kustomization.yaml would: the YAML
// files of dir and its sub-folders, a sub-folder with its own
// kustomization.yaml as one entry.
func manifestsIn(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && findKustomization(p) != "" {
				out = append(out, relTo(dir, p))
				return filepath.SkipDir
			}
			if strings.HasPrefix(d.Name(), ".") && p != dir {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(p)
		if (ext == ".yaml" || ext == ".yml") && d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(data, []byte("apiVersion:")) && bytes.Contains(data, []byte("kind:")) {
				out = append(out, relTo(dir, p))
			}
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// readDocuments reads the YAML documents of a file, keeping comments, key
// order and sequence indentation.
func readDocuments(path string) ([]*yaml.RNode, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rw := &kio.ByteReadWriter{Reader: bytes.NewReader(data), PreserveSeqIndent: true, OmitReaderAnnotations: false}
	return rw.Read()
}

// writeDocuments writes documents read by readDocuments back to path.
func writeDocuments(path string, docs []*yaml.RNode) error {
	var buf bytes.Buffer
	rw := &kio.ByteReadWriter{Writer: &buf, PreserveSeqIndent: true}
	if err := rw.Write(docs); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// editDocument runs edit on the document of the object id in the
// repository file rel and writes the file when edit reports a change; found
// is false when no document of the file is the object.
func editDocument(root, rel string, id ObjectID, edit func(doc *yaml.RNode) (bool, error)) (changed, found bool, err error) {
	file, err := securePath(root, rel)
	if err != nil {
		return false, false, err
	}
	docs, err := readDocuments(file)
	if err != nil {
		return false, false, err
	}
	for _, doc := range docs {
		if !matches(doc, id) {
			continue
		}
		changed, err := edit(doc)
		if err != nil || !changed {
			return false, true, err
		}
		return true, true, writeDocuments(file, docs)
	}
	return false, false, nil
}

// matches tells whether a document is the object id (a built namespace may
// come from a kustomization, so an empty namespace in the file matches).
func matches(doc *yaml.RNode, id ObjectID) bool {
	return id.matches(ObjectID{Kind: doc.GetKind(), Namespace: doc.GetNamespace(), Name: doc.GetName()})
}
