// Package golden compares test output with files and folders under
// testdata, and rewrites them when the tests run with -update.
package golden

import (
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files and trees in testdata")

// File compares got with the file at path, or writes it there with -update.
func File(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (run with -update after checking the change):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// Tree compares the files below root with those below want, or makes want
// a copy of root with -update.
func Tree(t testing.TB, want, root string) {
	t.Helper()
	if *update {
		if err := os.RemoveAll(want); err != nil {
			t.Fatal(err)
		}
		for path, content := range Read(t, root) {
			File(t, filepath.Join(want, filepath.FromSlash(path)), []byte(content))
		}
	}
	got, wanted := Read(t, root), Read(t, want)
	for path, w := range wanted {
		if got[path] != w {
			t.Errorf("%s differs (run with -update after checking the change):\n--- got\n%s\n--- want\n%s", path, got[path], w)
		}
	}
	for path := range got {
		if _, ok := wanted[path]; !ok {
			t.Errorf("unexpected file %s", path)
		}
	}
}

// Read returns every file below root, by slash path.
func Read(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
