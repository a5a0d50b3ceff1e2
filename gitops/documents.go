package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"sigs.k8s.io/kustomize/kyaml/kio"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// ErrCannotEdit: sluice cannot make the change safely; the error says which
// line a human must change.
var ErrCannotEdit = errors.New("sluice cannot edit this safely")

// securePath joins a repository-relative path to root, refusing to leave
// the repository through .. or symlinks.
func securePath(root, path string) (string, error) {
	p, err := securejoin.SecureJoin(root, path)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", path, err)
	}
	if !within(root, p) {
		return "", fmt.Errorf("path %q leaves the repository", path)
	}
	return p, nil
}

// within tells whether path is root or below it.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
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
	return writeFile(path, buf.Bytes())
}

// writeFile writes data to the regular file path, creating it when it does
// not exist. A symbolic link is not written through, wherever it points:
// a link in a repository may lead out of the clone.
func writeFile(path string, data []byte) error {
	if info, err := os.Lstat(path); err == nil && info.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link; sluice writes only to regular files: replace the link with the file", ErrCannotEdit, filepath.Base(path))
	}
	touched(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
	doc := documentOf(docs, id)
	if doc == nil {
		return false, false, nil
	}
	changed, err = edit(doc)
	if err != nil || !changed {
		return false, true, err
	}
	return true, true, writeDocuments(file, docs)
}

// documentOf returns the document of docs that defines the built object
// id, or nil. The file names the object before the build renamed it: a
// kustomization or Flux's targetNamespace may set its namespace, and
// name prefixes and suffixes its name, so the document whose name is the
// longest part of the built one stands in when none has it whole.
func documentOf(docs []*yaml.RNode, id ObjectID) *yaml.RNode {
	var best *yaml.RNode
	for _, doc := range docs {
		if doc.GetKind() != id.Kind {
			continue
		}
		name := doc.GetName()
		if name == id.Name && (doc.GetNamespace() == "" || id.Namespace == "" || doc.GetNamespace() == id.Namespace) {
			return doc
		}
		if name != "" && strings.Contains(id.Name, name) && (best == nil || len(name) > len(best.GetName())) {
			best = doc
		}
	}
	return best
}

// snapshot keeps the contents of the repository files rel and returns a
// function that writes them back.
func snapshot(root string, rel []string) (func(), error) {
	saved := map[string][]byte{}
	for _, r := range rel {
		file, err := securePath(root, r)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		saved[file] = data
	}
	return func() {
		for file, data := range saved {
			_ = writeFile(file, data)
		}
	}, nil
}
