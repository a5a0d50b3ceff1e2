package gitops

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// TestBuildRemembersWhatItRead: a build is made again only when something
// it read reads otherwise: a file of the folder, a base elsewhere that it
// includes, the .sourceignore files over it; whoever wrote them, and even
// when the size and the time stay the same.
func TestBuildRemembersWhatItRead(t *testing.T) {
	root := t.TempDir()
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: app:1\n"
	writeTestFile(t, filepath.Join(root, "apps/base/deployment.yaml"), deployment)
	writeTestFile(t, filepath.Join(root, "apps/web/kustomization.yaml"), "resources:\n  - ../base/deployment.yaml\n")
	writeTestFile(t, filepath.Join(root, "apps/other/config.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n")
	k := Kustomization{Path: "apps/web"}
	image := func(objs []built) string {
		if len(objs) != 1 {
			t.Fatalf("the build has %d objects, want the Deployment", len(objs))
		}
		return fieldValue(containersOf(mustObject(t, objs[0]))[0], "image")
	}
	last, err := build(root, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		change  func()
		rebuilt bool
		image   string
	}{
		{"nothing changed", func() {}, false, "app:1"},
		{"a folder the build does not read changed", func() {
			writeTestFile(t, filepath.Join(root, "apps/other/more.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\n")
		}, false, "app:1"},
		{"the folder's file written again as it was", func() {
			writeTestFile(t, filepath.Join(root, "apps/web/kustomization.yaml"), "resources:\n  - ../base/deployment.yaml\n")
		}, false, "app:1"},
		{"the base elsewhere changed, same size", func() {
			writeTestFile(t, filepath.Join(root, "apps/base/deployment.yaml"), strings.Replace(deployment, "app:1", "app:2", 1))
		}, true, "app:2"},
		{"a file added to the folder", func() {
			writeTestFile(t, filepath.Join(root, "apps/web/notes.txt"), "notes\n")
		}, true, "app:2"},
		{"a .sourceignore over the folder", func() {
			writeTestFile(t, filepath.Join(root, ".sourceignore"), "apps/web/notes.txt\n")
		}, true, "app:2"},
		{"the base removed", func() {
			if err := os.Remove(filepath.Join(root, "apps/base/deployment.yaml")); err != nil {
				t.Fatal(err)
			}
			writeTestFile(t, filepath.Join(root, "apps/base/deployment.yaml"), strings.Replace(deployment, "app:1", "app:3", 1))
		}, true, "app:3"},
	} {
		step.change()
		objs, err := build(root, k)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if rebuilt := &objs[0] != &last[0]; rebuilt != step.rebuilt {
			t.Errorf("%s: built again = %v, want %v", step.name, rebuilt, step.rebuilt)
		}
		if got := image(objs); got != step.image {
			t.Errorf("%s: the build runs %s, want %s", step.name, got, step.image)
		}
		last = objs
	}

	other, err := build(root, Kustomization{Path: "apps/other"})
	if err != nil || &other[0] == &last[0] {
		t.Fatalf("another Kustomization's build = %v, %v; want its own", other, err)
	}
}

// TestForgetStaleLetsGoOfChangedBuildsOnly: the builds a batch's edits
// made stale are let go of before the checks build again; one whose inputs
// read the same stays remembered.
func TestForgetStaleLetsGoOfChangedBuildsOnly(t *testing.T) {
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "apps/web/config.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n")
	writeTestFile(t, filepath.Join(root, "apps/api/config.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api\n")
	web, api := Kustomization{Path: "apps/web"}, Kustomization{Path: "apps/api"}
	var keys []string
	for _, k := range []Kustomization{web, api} {
		if _, err := build(root, k); err != nil {
			t.Fatal(err)
		}
		key, ok := memoKey(root, k)
		if !ok {
			t.Fatalf("no memo key for %s", k.Path)
		}
		keys = append(keys, key)
	}
	remembered := func(key string) bool {
		builds.Lock()
		defer builds.Unlock()
		_, ok := builds.m[key]
		return ok
	}
	writeTestFile(t, filepath.Join(root, "apps/web/more.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\n")
	forgetStale(keys)
	if remembered(keys[0]) {
		t.Error("the build of apps/web, whose folder changed, is still remembered")
	}
	if !remembered(keys[1]) {
		t.Error("the build of apps/api, which nothing changed, was let go of")
	}
	objs, err := build(root, web)
	if err != nil || len(objs) != 2 {
		t.Fatalf("apps/web built again = %d objects, %v; want 2", len(objs), err)
	}
}

// mustObject parses the built object, failing the test when it cannot.
func mustObject(t testing.TB, b built) *yaml.RNode {
	t.Helper()
	obj, err := b.object()
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// TestABuildThroughALinkIsMadeAgain: a Kustomization's path that goes
// through a link reads the folder the link points to, and a commit that
// points it elsewhere changes no file of that folder: such a build is made
// again each time.
func TestABuildThroughALinkIsMadeAgain(t *testing.T) {
	root := t.TempDir()
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: app:%s\n"
	image := func(k Kustomization) string {
		objs, err := build(root, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 {
			t.Fatalf("the build has %d objects, want the Deployment", len(objs))
		}
		return fieldValue(containersOf(mustObject(t, objs[0]))[0], "image")
	}
	link := func(target string) {
		_ = os.Remove(filepath.Join(root, "current"))
		if err := os.Symlink(target, filepath.Join(root, "current")); err != nil {
			t.Fatal(err)
		}
	}
	writeTestFile(t, filepath.Join(root, "releases/v1/deployment.yaml"), strings.Replace(deployment, "%s", "v1", 1))
	writeTestFile(t, filepath.Join(root, "releases/v2/deployment.yaml"), strings.Replace(deployment, "%s", "v2", 1))
	link("releases/v1")
	if got := image(Kustomization{Path: "current"}); got != "app:v1" {
		t.Fatalf("image %s", got)
	}
	link("releases/v2")
	if got := image(Kustomization{Path: "current"}); got != "app:v2" {
		t.Errorf("the path's link points elsewhere: image %s, want app:v2", got)
	}
}
