package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// replayDeployment is the annotated Deployment apps/web of a fleet.
var replayDeployment = fmt.Sprintf(fleetDeployment, "web", "apps")

// adoptWeb is the change that adopts apps/web's Deployment; edits counts
// its runs, and their commit runs while the first one edits.
func adoptWeb(edits *int, their func()) Change {
	return Change{
		Branch: "main", Message: "Adopt web", Author: Signature{Name: "s", Email: "s@x"},
		Edit: func(root string) (bool, error) {
			*edits++
			if *edits == 1 {
				their()
			}
			_, changed, err := Adopt(root, Adoption{
				Kustomization: Kustomization{Path: "apps/web"},
				Deployment:    ObjectID{Kind: "Deployment", Namespace: "apps", Name: "web"},
				Strategy:      "canary", LiveReplicas: 3,
			})
			return changed, err
		},
	}
}

func TestAMovedBranchGetsTheEditsChangesWithoutEditingAgain(t *testing.T) {
	f := newFixture(t, map[string]string{
		"apps/web/deployment.yaml": replayDeployment,
		"docs/README.md":           "apps\n",
	})
	other := f.clone()
	edits := 0
	made := func() [2]float64 {
		return [2]float64{testutil.ToFloat64(commitsMade.WithLabelValues("edited")), testutil.ToFloat64(commitsMade.WithLabelValues("replayed"))}
	}
	before := made()
	res, err := f.repos.Write(context.Background(), f.source(), adoptWeb(&edits, func() {
		// Someone pushes, to a file no build reads, while sluice edits.
		writeTestFile(t, filepath.Join(other, "docs", "README.md"), "apps, and more\n")
		f.pushTheirs(other)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if edits != 1 || res.Attempts != 2 || res.Replayed != 1 {
		t.Fatalf("edits %d, attempts %d, replayed %d; want the edit once, its changes pushed on the second attempt without editing again", edits, res.Attempts, res.Replayed)
	}
	if got, want := made(), [2]float64{before[0] + 1, before[1] + 1}; got != want {
		t.Errorf("commits edited and replayed: %v, want %v", got, want)
	}

	clone := f.clone()
	if log := f.git(clone, "log", "--format=%s"); log != "Adopt web\ntheir change\nInitial commit" {
		t.Fatalf("history:\n%s", log)
	}
	if got := f.git(clone, "rev-parse", "HEAD"); got != res.Commit {
		t.Fatalf("head %s, want %s", got, res.Commit)
	}
	// What was pushed is what the edit writes on their commit.
	want := filepath.Join(t.TempDir(), "want")
	copyTree(t, other, want)
	if _, _, err := Adopt(want, Adoption{
		Kustomization: Kustomization{Path: "apps/web"},
		Deployment:    ObjectID{Kind: "Deployment", Namespace: "apps", Name: "web"},
		Strategy:      "canary", LiveReplicas: 3,
	}); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"apps/web/deployment.yaml", "apps/web/web-delivery.yaml", "docs/README.md"} {
		got, err := os.ReadFile(filepath.Join(clone, file))
		if err != nil {
			t.Fatal(err)
		}
		wanted, err := os.ReadFile(filepath.Join(want, file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(wanted) {
			t.Errorf("%s:\n%s\nwant:\n%s", file, got, wanted)
		}
	}
	if status := f.git(clone, "show", "--name-status", "--format=", "HEAD"); status != "M\tapps/web/deployment.yaml\nA\tapps/web/web-delivery.yaml" {
		t.Errorf("the commit changes:\n%s", status)
	}

	// The working copy holds the replayed commit as a checkout of it: the
	// next write starts from it and commits only its own change.
	next, err := f.repos.Write(context.Background(), f.source(), Change{Branch: "main", Message: "next", Author: Signature{Name: "s", Email: "s@x"},
		Edit: setFile("docs/notes.md", "notes\n")})
	if err != nil || !next.Pushed || next.Attempts != 1 {
		t.Fatalf("next write: %+v, %v", next, err)
	}
	f.git(clone, "pull", "-q", "origin", "main")
	if status := f.git(clone, "show", "--name-status", "--format=", "HEAD"); status != "A\tdocs/notes.md" {
		t.Errorf("the next commit changes:\n%s", status)
	}
	if f.git(clone, "status", "--porcelain") != "" {
		t.Errorf("the tree differs from the commit")
	}
}

func TestAMovedBranchGetsARemovalWithoutEditingAgain(t *testing.T) {
	// An adopted app, whose Delivery an opt-out removes.
	adopted := t.TempDir()
	writeTestFile(t, filepath.Join(adopted, "apps/web/deployment.yaml"), replayDeployment)
	if _, _, err := Adopt(adopted, Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "apps", Name: "web"}, Strategy: "canary", LiveReplicas: 3}); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"docs/README.md": "apps\n"}
	for _, name := range []string{"apps/web/deployment.yaml", "apps/web/web-delivery.yaml"} {
		data, err := os.ReadFile(filepath.Join(adopted, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(data)
	}
	f := newFixture(t, files)
	optOut := OptOut{Kustomization: Kustomization{Path: "apps/web"}, Replicas: 3,
		Delivery: ObjectID{Kind: "Delivery", Namespace: "apps", Name: "web"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "apps", Name: "web"}}
	other := f.clone()
	edits := 0
	res, err := f.repos.Write(context.Background(), f.source(), Change{
		Branch: "main", Message: "Hand web back", Author: Signature{Name: "s", Email: "s@x"},
		Edit: func(root string) (bool, error) {
			edits++
			if edits == 1 {
				writeTestFile(t, filepath.Join(other, "docs", "README.md"), "apps, and more\n")
				f.pushTheirs(other)
			}
			return RemoveDelivery(root, optOut)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if edits != 1 || res.Replayed != 1 {
		t.Fatalf("edits %d, replayed %d; want the removal replayed", edits, res.Replayed)
	}
	want := filepath.Join(t.TempDir(), "want")
	copyTree(t, other, want)
	if _, err := RemoveDelivery(want, optOut); err != nil {
		t.Fatal(err)
	}
	clone := f.clone()
	if _, err := os.Stat(filepath.Join(clone, "apps/web/web-delivery.yaml")); !os.IsNotExist(err) {
		t.Errorf("the Delivery's file is still there: %v", err)
	}
	for _, file := range []string{"apps/web/deployment.yaml", "docs/README.md"} {
		got, _ := os.ReadFile(filepath.Join(clone, file))
		wanted, _ := os.ReadFile(filepath.Join(want, file))
		if string(got) != string(wanted) {
			t.Errorf("%s:\n%s\nwant:\n%s", file, got, wanted)
		}
	}
}

func TestAMovedBranchThatChangedWhatTheEditReadIsEditedAgain(t *testing.T) {
	for _, their := range []struct {
		name, wantInDeployment string
		change                 func(t *testing.T, dir string)
	}{
		{"the Deployment's file", "registry.example/app:v2", func(t *testing.T, dir string) {
			writeTestFile(t, filepath.Join(dir, "apps/web/deployment.yaml"), replayDeployment[:len(replayDeployment)-len("v1\n")]+"v2\n")
		}},
		{"a new file in the Kustomization's folder", "registry.example/app:v1", func(t *testing.T, dir string) {
			writeTestFile(t, filepath.Join(dir, "apps/web/notes.txt"), "notes\n")
		}},
		{"a link anywhere", "registry.example/app:v1", func(t *testing.T, dir string) {
			if err := os.Symlink("../apps", filepath.Join(dir, "docs-apps")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(their.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{"apps/web/deployment.yaml": replayDeployment})
			other := f.clone()
			edits := 0
			res, err := f.repos.Write(context.Background(), f.source(), adoptWeb(&edits, func() {
				their.change(t, other)
				f.pushTheirs(other)
			}))
			if err != nil {
				t.Fatal(err)
			}
			if edits != 2 || res.Attempts != 2 || res.Replayed != 0 {
				t.Fatalf("edits %d, attempts %d, replayed %d; want the edit run again on their commit", edits, res.Attempts, res.Replayed)
			}
			clone := f.clone()
			if log := f.git(clone, "log", "--format=%s"); log != "Adopt web\ntheir change\nInitial commit" {
				t.Fatalf("history:\n%s", log)
			}
			deployment, err := os.ReadFile(filepath.Join(clone, "apps/web/deployment.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(deployment), their.wantInDeployment) || strings.Contains(string(deployment), "replicas:") {
				t.Fatalf("deployment.yaml:\n%s", deployment)
			}
		})
	}
}

func TestReadsAffects(t *testing.T) {
	r := &reads{
		trees:   []string{"apps/web"},
		files:   []string{"base/deployment.yaml", "apps/.sourceignore"},
		entries: []string{"base", "."},
	}
	for _, c := range []struct {
		moved movedPath
		want  bool
	}{
		{movedPath{"apps/web/deployment.yaml", false}, true},
		{movedPath{"apps/web/sub/new.yaml", true}, true},
		{movedPath{"apps/webapp/deployment.yaml", false}, false},
		{movedPath{"apps", true}, true}, // a file where the folder was
		{movedPath{"base/deployment.yaml", false}, true},
		{movedPath{"base/service.yaml", false}, false},
		{movedPath{"base/service.yaml", true}, true}, // base lists one more entry
		{movedPath{"base/sub/x.yaml", true}, true},
		{movedPath{"apps/.sourceignore", true}, true},
		{movedPath{"README.md", false}, false},
		{movedPath{"README.md", true}, true}, // the root lists one more entry
		{movedPath{"docs/guide.md", false}, false},
	} {
		if got := r.affects(c.moved); got != c.want {
			t.Errorf("affects(%+v) = %v, want %v", c.moved, got, c.want)
		}
	}
}

// TestAMovedBranchThatChangedAKustomizationTheEditReadIsEditedAgain: the
// Deployment comes from another folder, and the other commit changes only
// a kustomization.yaml the edit read but did not write.
func TestAMovedBranchThatChangedAKustomizationTheEditReadIsEditedAgain(t *testing.T) {
	for _, tt := range []struct {
		name                string
		files               map[string]string
		theirFile, theirNew string
	}{
		{
			// The build reads the shared folder only as one file; the
			// adoption writes there, and reads that folder's
			// kustomization.yaml, which someone adds meanwhile.
			name: "the folder of a written file",
			files: map[string]string{
				"apps/shared/web.yaml":          replayDeployment,
				"apps/web/kustomization.yaml":   "resources:\n  - ../shared/web.yaml\n",
				"apps/shared/other-config.yaml": "kind: ConfigMap\n",
			},
			theirFile: "apps/shared/kustomization.yaml",
			theirNew:  "resources:\n  - web.yaml\nreplicas:\n  - name: web\n    count: 2\n",
		},
		{
			// The Deployment comes from a base; the overlay's
			// kustomization.yaml is read by the build only.
			name: "the overlay's kustomization",
			files: map[string]string{
				"apps/base/deployment.yaml":    replayDeployment,
				"apps/base/kustomization.yaml": "resources:\n  - deployment.yaml\n",
				"apps/web/kustomization.yaml":  "resources:\n  - ../base\n",
			},
			theirFile: "apps/web/kustomization.yaml",
			theirNew:  "resources:\n  - ../base\ncommonAnnotations:\n  team: web\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.files)
			other := f.clone()
			edits := 0
			res, err := f.repos.Write(context.Background(), f.source(), adoptWeb(&edits, func() {
				writeTestFile(t, filepath.Join(other, tt.theirFile), tt.theirNew)
				f.pushTheirs(other)
			}))
			if err != nil {
				t.Fatal(err)
			}
			if edits != 2 || res.Replayed != 0 {
				t.Fatalf("edits %d, replayed %d; want the edit run again on their commit", edits, res.Replayed)
			}
		})
	}
}
