package gitops

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestBuildOncePerPristineCommit: in a working copy that holds exactly a
// commit, a Kustomization is built once; a file written there, by sluice's
// own edits, makes the next build read the files again, and so does a
// clone that replaces the working copy.
func TestBuildOncePerPristineCommit(t *testing.T) {
	root := t.TempDir()
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: app:1\n"
	writeTestFile(t, filepath.Join(root, "apps/web/web.yaml"), fmt.Sprintf(deployment, "web"))
	k := Kustomization{Path: "apps/web"}

	checkedOut(root, "1111")
	first, err := build(root, k)
	if err != nil || len(first) != 1 {
		t.Fatalf("build = %v, %v", first, err)
	}
	again, err := build(root, k)
	if err != nil || &again[0] != &first[0] {
		t.Fatalf("the second build of the same commit was made again (err %v)", err)
	}
	other, err := build(root, Kustomization{Path: "apps"})
	if err != nil || len(other) != 1 || &other[0] == &first[0] {
		t.Fatalf("another Kustomization's build = %v, %v; want its own", other, err)
	}

	if err := writeFile(filepath.Join(root, "apps/web/api.yaml"), []byte(fmt.Sprintf(deployment, "api"))); err != nil {
		t.Fatal(err)
	}
	after, err := build(root, k)
	if err != nil || len(after) != 2 {
		t.Fatalf("build after a write = %d objects, %v; want the written file's too", len(after), err)
	}
	if isCheckoutOf(root, "1111") {
		t.Fatal("the working copy is still a checkout of its commit after a write")
	}

	checkedOut(root, "2222")
	fresh, err := build(root, k)
	if err != nil || len(fresh) != 2 || &fresh[0] == &after[0] {
		t.Fatalf("build of another commit = %v, %v; want it made again", fresh, err)
	}
	touched(root)
	if outside, err := build(root, k); err != nil || &outside[0] == &fresh[0] {
		t.Fatalf("a build outside a checkout was remembered (err %v)", err)
	}
}
