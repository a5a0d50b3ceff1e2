package gitops

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden trees in testdata")

// copyTree copies the folder src into dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readTree returns every file below root, by slash path.
func readTree(t *testing.T, root string) map[string]string {
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

func TestAdopt(t *testing.T) {
	tests := []struct {
		layout   string
		adoption Adoption
		want     Adopted
	}{
		{
			layout:   "plain-folder",
			adoption: Adoption{Path: "./apps/web", Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}, Strategy: "canary", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/web/web.yaml", DeliveryFile: "apps/web/web-delivery.yaml", Replicas: 3},
		},
		{
			layout:   "listed",
			adoption: Adoption{Path: "apps/api", Deployment: ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"}, Strategy: "blue-green", Policy: "frontend", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/api/deployment.yaml", DeliveryFile: "apps/api/api-delivery.yaml", Replicas: 2},
		},
		{
			layout:   "overlay",
			adoption: Adoption{Path: "clusters/prod", Deployment: ObjectID{Kind: "Deployment", Namespace: "ai", Name: "inference"}, Strategy: "canary", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/base/inference/deployment.yaml", DeliveryFile: "apps/base/inference/inference-delivery.yaml", Replicas: 4},
		},
		{
			layout:   "replicas-field",
			adoption: Adoption{Path: "apps/queue", Deployment: ObjectID{Kind: "Deployment", Namespace: "jobs", Name: "worker"}, Strategy: "canary", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/queue/worker.yaml", DeliveryFile: "apps/queue/worker-delivery.yaml", Replicas: 5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.layout, func(t *testing.T) {
			root := t.TempDir()
			copyTree(t, filepath.Join("testdata", "adopt", tt.layout, "in"), root)

			got, changed, err := Adopt(root, tt.adoption)
			if err != nil {
				t.Fatal(err)
			}
			if !changed || got != tt.want {
				t.Fatalf("Adopt = %+v, %v; want %+v, true", got, changed, tt.want)
			}

			wantDir := filepath.Join("testdata", "adopt", tt.layout, "out")
			if *updateGolden {
				_ = os.RemoveAll(wantDir)
				copyTree(t, root, wantDir)
			}
			gotTree, wantTree := readTree(t, root), readTree(t, wantDir)
			for path, want := range wantTree {
				if gotTree[path] != want {
					t.Errorf("%s differs (run with -update after checking):\n--- got\n%s\n--- want\n%s", path, gotTree[path], want)
				}
			}
			for path := range gotTree {
				if _, ok := wantTree[path]; !ok {
					t.Errorf("unexpected file %s", path)
				}
			}

			// A second adoption finds nothing to change.
			if _, changed, err := Adopt(root, tt.adoption); err != nil || changed {
				t.Fatalf("second Adopt: changed=%v, err=%v; want no change", changed, err)
			}
		})
	}
}

func TestAdoptRefusesWhatItCannotEditSafely(t *testing.T) {
	root := t.TempDir()
	copyTree(t, filepath.Join("testdata", "adopt", "patched", "in"), root)
	_, _, err := Adopt(root, Adoption{Path: "apps/web", Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary"})
	if !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("Adopt = %v, want ErrCannotEdit", err)
	}
	for _, want := range []string{"spec.replicas of Deployment/web is still set", "apps/web/deployment.yaml", "replicas: 6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
}

func TestAdoptStaysInTheRepository(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	copyTree(t, filepath.Join("testdata", "adopt", "listed", "in"), root)
	_, _, err := Adopt(root, Adoption{Path: "../../etc", Deployment: ObjectID{Kind: "Deployment", Name: "api"}, Strategy: "canary"})
	if err == nil {
		t.Fatal("a path outside the repository was accepted")
	}
	// A symlink out of the repository is followed only inside it.
	if err := os.Symlink("/etc", filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Adopt(root, Adoption{Path: "escape", Deployment: ObjectID{Kind: "Deployment", Name: "api"}, Strategy: "canary"}); err == nil {
		t.Fatal("a symlink out of the repository was followed")
	}
}
