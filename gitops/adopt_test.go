package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"

	"github.com/sluice-dev/sluice/internal/golden"
)

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

func TestAdopt(t *testing.T) {
	tests := []struct {
		layout   string
		adoption Adoption
		want     Adopted
	}{
		{
			layout:   "plain-folder",
			adoption: Adoption{Kustomization: Kustomization{Path: "./apps/web"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}, Strategy: "canary", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/web/web.yaml", DeliveryFile: "apps/web/web-delivery.yaml", Replicas: 3},
		},
		{
			layout: "listed",
			// The active Service is in the build and gets Flux's
			// IfNotPresent; the preview Service is applied elsewhere.
			adoption: Adoption{Kustomization: Kustomization{Path: "apps/api"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"}, Strategy: "blue-green", Policy: "frontend", LiveReplicas: 1,
				Switched: []ObjectID{{Kind: "Service", Name: "api"}, {Kind: "Service", Name: "api-preview"}}},
			want: Adopted{DeploymentFile: "apps/api/deployment.yaml", DeliveryFile: "apps/api/api-delivery.yaml", Replicas: 2,
				Switched: []string{"apps/api/service.yaml"}},
		},
		{
			layout:   "overlay",
			adoption: Adoption{Kustomization: Kustomization{Path: "clusters/prod"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "ai", Name: "inference"}, Strategy: "canary", LiveReplicas: 1},
			want:     Adopted{DeploymentFile: "apps/base/inference/deployment.yaml", DeliveryFile: "apps/base/inference/inference-delivery.yaml", Replicas: 4},
		},
		{
			layout:   "replicas-field",
			adoption: Adoption{Kustomization: Kustomization{Path: "apps/queue"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "jobs", Name: "worker"}, Strategy: "canary", LiveReplicas: 1},
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
			if !changed || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Adopt = %+v, %v; want %+v, true", got, changed, tt.want)
			}

			golden.Tree(t, filepath.Join("testdata", "adopt", tt.layout, "out"), root)

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
	_, _, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary"})
	if !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("Adopt = %v, want ErrCannotEdit", err)
	}
	for _, want := range []string{"apps/web/deployment.yaml:8: spec.replicas of Deployment/web", "the patches field of apps/web/kustomization.yaml (line 4)", "replicas: 6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
}

func TestAdoptStaysInTheRepository(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	copyTree(t, filepath.Join("testdata", "adopt", "listed", "in"), root)
	_, _, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "../../etc"}, Deployment: ObjectID{Kind: "Deployment", Name: "api"}, Strategy: "canary"})
	if err == nil {
		t.Fatal("a path outside the repository was accepted")
	}
	// A symlink out of the repository is followed only inside it.
	if err := os.Symlink("/etc", filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "escape"}, Deployment: ObjectID{Kind: "Deployment", Name: "api"}, Strategy: "canary"}); err == nil {
		t.Fatal("a symlink out of the repository was followed")
	}
}

// TestAdoptParkAndOptOut follows a Deployment through Git: adopted, parked
// at zero replicas by the first stable record, then handed back by an
// opt-out that removes the Delivery and restores its replicas.
func TestAdoptParkAndOptOut(t *testing.T) {
	tests := []struct {
		layout, path string
		deployment   ObjectID
	}{
		{"plain-folder", "./apps/web", ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}},
		{"listed", "apps/api", ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"}},
		{"overlay", "clusters/prod", ObjectID{Kind: "Deployment", Namespace: "ai", Name: "inference"}},
		{"replicas-field", "apps/queue", ObjectID{Kind: "Deployment", Namespace: "jobs", Name: "worker"}},
	}
	for _, tt := range tests {
		t.Run(tt.layout, func(t *testing.T) {
			root := t.TempDir()
			copyTree(t, filepath.Join("testdata", "adopt", tt.layout, "in"), root)
			adopted, _, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: tt.path}, Deployment: tt.deployment, Strategy: "canary", LiveReplicas: 1})
			if err != nil {
				t.Fatal(err)
			}
			delivery := ObjectID{Kind: "Delivery", Namespace: tt.deployment.Namespace, Name: tt.deployment.Name}

			// The Service named like the Deployment, where there is one,
			// is switched by Argo Rollouts and marked for Flux.
			stable := Promotion{Kustomization: Kustomization{Path: tt.path}, Delivery: delivery, Deployment: tt.deployment, Switched: []ObjectID{{Kind: "Service", Name: tt.deployment.Name}},
				Stable: &deliveryv1.StableRelease{TemplateHash: "aaaaaaaaaa", Revision: "main@sha1:0123", PromotedAt: at("2026-11-25T10:05:00Z")}}
			if changed, err := RecordPromotion(root, stable); err != nil || !changed {
				t.Fatalf("stable: changed=%v err=%v", changed, err)
			}
			if r, ok, err := builtReplicas(root, Kustomization{Path: tt.path}, tt.deployment); err != nil || !ok || r != 0 {
				t.Fatalf("after the stable record the Deployment builds with replicas %d (set %v, err %v), want 0", r, ok, err)
			}
			// Once parked, adopting again changes nothing.
			if _, changed, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: tt.path}, Deployment: tt.deployment, Strategy: "canary", LiveReplicas: 0}); err != nil || changed {
				t.Fatalf("Adopt after parking: changed=%v err=%v; want no change", changed, err)
			}

			optOut := OptOut{Kustomization: Kustomization{Path: tt.path}, Delivery: delivery, Deployment: tt.deployment, Replicas: adopted.Replicas, Switched: []ObjectID{{Kind: "Service", Name: tt.deployment.Name}}}
			if changed, err := RemoveDelivery(root, optOut); err != nil || !changed {
				t.Fatalf("RemoveDelivery: changed=%v err=%v", changed, err)
			}
			if changed, err := RemoveDelivery(root, optOut); err != nil || changed {
				t.Fatalf("RemoveDelivery again: changed=%v err=%v; want no change", changed, err)
			}
			if r, ok, err := builtReplicas(root, Kustomization{Path: tt.path}, tt.deployment); err != nil || !ok || r != adopted.Replicas {
				t.Fatalf("after the opt-out the Deployment builds with replicas %d (set %v, err %v), want %d", r, ok, err, adopted.Replicas)
			}
			golden.Tree(t, filepath.Join("testdata", "optout", tt.layout), root)
		})
	}
}

// TestAdoptAfterParkingTakesWhatRuns: a Delivery removed from Git by hand
// leaves the Deployment parked at zero; adopting it again takes the
// replicas that run, never zero.
func TestAdoptAfterParkingTakesWhatRuns(t *testing.T) {
	root := t.TempDir()
	copyTree(t, filepath.Join("testdata", "adopt", "plain-folder", "in"), root)
	deployment := ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}
	a := Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: deployment, Strategy: "canary", LiveReplicas: 3}
	if _, _, err := Adopt(root, a); err != nil {
		t.Fatal(err)
	}
	p := Promotion{Kustomization: Kustomization{Path: "apps/web"}, Delivery: ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"}, Deployment: deployment,
		Stable: &deliveryv1.StableRelease{TemplateHash: "aaaaaaaaaa"}}
	if _, err := RecordPromotion(root, p); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "apps/web/web-delivery.yaml")); err != nil {
		t.Fatal(err)
	}
	for live, want := range map[int32]int32{3: 3, 0: 1} {
		a.LiveReplicas = live
		got, changed, err := Adopt(root, a)
		if err != nil || !changed || got.Replicas != want {
			t.Errorf("with %d live replicas: Adopt = %+v, %v, %v; want %d replicas", live, got, changed, err, want)
		}
		_ = os.Remove(filepath.Join(root, "apps/web/web-delivery.yaml"))
	}
}

// TestRecordPromotionWhenParkingIsRefused: a patch that sets the
// Deployment's replicas does not stop the stable record, nothing of the
// parking is written, and the park check says which file to change.
func TestRecordPromotionWhenParkingIsRefused(t *testing.T) {
	root := promotionFixture(t)
	writeTestFile(t, filepath.Join(root, "apps/web/kustomization.yaml"), `resources:
  - deployment.yaml
  - web-delivery.yaml
patches:
  - target: {kind: Deployment, name: web}
    patch: |
      - op: add
        path: /spec/replicas
        value: 6
`)
	p := Promotion{Kustomization: Kustomization{Path: "apps/web"},
		Delivery:   ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"},
		Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"},
		Stable:     &deliveryv1.StableRelease{TemplateHash: "bbbbbbbbbb", PromotedAt: at("2026-11-25T10:05:00Z")}}
	if changed, err := RecordPromotion(root, p); err != nil || !changed {
		t.Fatalf("RecordPromotion = %v, %v; want the stable record written", changed, err)
	}
	if got := readFile(t, filepath.Join(root, "apps/web/deployment.yaml")); got != deploymentFile {
		t.Errorf("the refused parking was written:\n%s", got)
	}
	if got := readFile(t, filepath.Join(root, "apps/web/web-delivery.yaml")); !strings.Contains(got, "templateHash: bbbbbbbbbb") {
		t.Errorf("the stable record is missing:\n%s", got)
	}
	p.ParkOnly = true
	_, err := RecordPromotion(root, p)
	if !errors.Is(err, ErrCannotEdit) || !strings.Contains(err.Error(), "apps/web/deployment.yaml") {
		t.Errorf("the park check = %v; want ErrCannotEdit naming the file", err)
	}
	if got := readFile(t, filepath.Join(root, "apps/web/deployment.yaml")); got != deploymentFile {
		t.Errorf("the refused parking was written:\n%s", got)
	}

	// A park check for a stable template Git no longer records does
	// nothing.
	p.Stable.TemplateHash = "cccccccccc"
	if changed, err := RecordPromotion(root, p); err != nil || changed {
		t.Errorf("park check of another template = %v, %v; want no change", changed, err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestAdoptDoesNotWriteThroughSymlinks: a kustomization.yaml that is a
// link, to another clone, to nowhere or within the repository, is never
// written through: nothing outside the repository changes or appears.
func TestAdoptDoesNotWriteThroughSymlinks(t *testing.T) {
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    sluice.dev/strategy: canary\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: web\n          image: web:1\n"
	kustomization := "resources:\n  - deployment.yaml\n"
	outside := filepath.Join(t.TempDir(), "other-clone")
	writeTestFile(t, filepath.Join(outside, "kustomization.yaml"), kustomization)
	tests := []struct {
		name   string
		target func(root string) string
	}{
		{"to another clone", func(string) string { return filepath.Join(outside, "kustomization.yaml") }},
		{"dangling", func(string) string { return filepath.Join(outside, "missing", "kustomization.yaml") }},
		{"within the repository", func(root string) string { return filepath.Join(root, "shared", "kustomization.yaml") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTestFile(t, filepath.Join(root, "apps/web/deployment.yaml"), deployment)
			writeTestFile(t, filepath.Join(root, "shared/kustomization.yaml"), kustomization)
			if err := os.Symlink(tt.target(root), filepath.Join(root, "apps/web/kustomization.yaml")); err != nil {
				t.Fatal(err)
			}
			_, _, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary", LiveReplicas: 2})
			if err == nil {
				t.Fatal("Adopt wrote through a linked kustomization.yaml")
			}
			if data, _ := os.ReadFile(filepath.Join(outside, "kustomization.yaml")); string(data) != kustomization {
				t.Errorf("the file outside the repository changed:\n%s", data)
			}
			if _, err := os.Lstat(filepath.Join(outside, "missing")); !os.IsNotExist(err) {
				t.Errorf("a file appeared outside the repository: %v", err)
			}
			if data, _ := os.ReadFile(filepath.Join(root, "shared/kustomization.yaml")); string(data) != kustomization {
				t.Errorf("the link's target in the repository changed:\n%s", data)
			}
		})
	}
}

// TestAdoptRefusesLinksFluxLeavesOut: a link in a folder Flux's generator
// scans, out of the repository or within it, is not in Flux's artifact.
// The adoption names it and writes nothing; a link beside a kustomization
// that does not list it is left alone.
func TestAdoptRefusesLinksFluxLeavesOut(t *testing.T) {
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    sluice.dev/strategy: canary\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: web\n          image: web:1\n"
	tests := []struct {
		name, link, target string
		kustomization      bool
		refused            string
	}{
		{name: "file out of the repository", link: "apps/web/passwd.yaml", target: "/etc/passwd", refused: "apps/web/passwd.yaml is a symbolic link"},
		{name: "folder out of the repository", link: "apps/web/sub/etc", target: "/etc", refused: "apps/web/sub/etc is a symbolic link"},
		{name: "file within the repository", link: "apps/web/shared.yaml", target: "../../shared/config.yaml", refused: "apps/web/shared.yaml is a symbolic link"},
		{name: "not listed", link: "apps/web/passwd.yaml", target: "/etc/passwd", kustomization: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTestFile(t, filepath.Join(root, "apps/web/deployment.yaml"), deployment)
			writeTestFile(t, filepath.Join(root, "shared/config.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n")
			if tt.kustomization {
				writeTestFile(t, filepath.Join(root, "apps/web/kustomization.yaml"), "resources:\n  - deployment.yaml\n")
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(root, tt.link)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(tt.target, filepath.Join(root, tt.link)); err != nil {
				t.Fatal(err)
			}
			_, changed, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary", LiveReplicas: 2})
			if tt.refused == "" {
				if err != nil || !changed {
					t.Fatalf("Adopt = %v, %v; want the adoption", changed, err)
				}
				return
			}
			if !errors.Is(err, ErrCannotEdit) || !strings.Contains(fmt.Sprint(err), tt.refused) {
				t.Fatalf("Adopt = %v; want ErrCannotEdit naming %q", err, tt.refused)
			}
			if _, err := os.Lstat(filepath.Join(root, "apps/web/web-delivery.yaml")); !os.IsNotExist(err) {
				t.Errorf("the adoption wrote the Delivery: %v", err)
			}
		})
	}
}

// TestAdoptRefusesAnchorsThatExpandWithoutEnd: a file whose aliases stand
// for billions of nodes stops the adoption at once, naming the file; one
// whose aliases stay small, and a file with stars but no aliases, do not.
func TestAdoptRefusesAnchorsThatExpandWithoutEnd(t *testing.T) {
	deployment := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    sluice.dev/strategy: canary\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: web\n          image: web:1\n"
	laughs := func(levels int) string {
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\ndata:\n  l0: &l0 \"lol\"\n")
		for i := 1; i <= levels; i++ {
			fmt.Fprintf(&b, "  l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
		}
		return b.String()
	}
	var large strings.Builder
	large.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: large\n  annotations:\n    hosts: \"*.example.com\"\ndata:\n")
	for i := range 20_000 {
		fmt.Fprintf(&large, "  k%d: v\n", i)
	}
	tests := []struct {
		name, file, content string
		// kustomization is the folder's kustomization.yaml, none when
		// empty.
		kustomization string
		refused       bool
	}{
		{name: "billion laughs in the folder", file: "apps/web/laughs.yaml", content: laughs(9), refused: true},
		{name: "billion laughs in a subfolder the folder's build scans", file: "apps/web/config/laughs.yaml", content: laughs(9), refused: true},
		{name: "billion laughs elsewhere that the build includes", file: "apps/base/laughs.yaml", content: laughs(9), refused: true,
			kustomization: "resources:\n  - deployment.yaml\n  - ../base/laughs.yaml\n"},
		{name: "billion laughs as a patch", file: "apps/web/patch.yaml", content: strings.Replace(laughs(9), "kind: ConfigMap", "kind: Deployment", 1), refused: true,
			kustomization: "resources:\n  - deployment.yaml\npatches:\n  - path: patch.yaml\n"},
		// Flux does not read a file the Kustomization's build does not
		// include, and neither does sluice.
		{name: "billion laughs elsewhere in the repository", file: "apps/other/laughs.yaml", content: laughs(9)},
		{name: "a thousand laughs", file: "apps/web/laughs.yaml", content: laughs(3)},
		{name: "large without aliases", file: "apps/web/large.yaml", content: large.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTestFile(t, filepath.Join(root, "apps/web/deployment.yaml"), deployment)
			writeTestFile(t, filepath.Join(root, tt.file), tt.content)
			if tt.kustomization != "" {
				writeTestFile(t, filepath.Join(root, "apps/web/kustomization.yaml"), tt.kustomization)
			}
			_, changed, err := Adopt(root, Adoption{Kustomization: Kustomization{Path: "apps/web"}, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary", LiveReplicas: 2})
			if !tt.refused {
				if err != nil || !changed {
					t.Fatalf("Adopt = %v, %v; want the adoption", changed, err)
				}
				return
			}
			if !errors.Is(err, ErrCannotEdit) || !strings.Contains(fmt.Sprint(err), tt.file+": its YAML aliases expand to more than") {
				t.Fatalf("Adopt = %v; want ErrCannotEdit naming %s", err, tt.file)
			}
		})
	}
}

// TestAliasCheckReadsAChangedFileAgain: a file that passed the alias check
// and is then rewritten, even to the same size, is checked again.
func TestAliasCheckReadsAChangedFileAgain(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "apps/web/values.yaml")
	small := "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	writeTestFile(t, file, small)
	if err := boundedFile(root, file, nil); err != nil {
		t.Fatalf("boundedFile = %v on a small file", err)
	}
	var b strings.Builder
	b.WriteString("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&b, "l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}
	writeTestFile(t, file, b.String())
	if err := boundedFile(root, file, nil); !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("boundedFile = %v after the file became a billion laughs, want ErrCannotEdit", err)
	}
	// The same size and modification time, another inode: read again.
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, file, small)
	if err := boundedFile(root, file, nil); err != nil {
		t.Fatal(err)
	}
	replacement := file + ".new"
	writeTestFile(t, replacement, b.String())
	if err := os.Chtimes(replacement, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(replacement, file); err != nil {
		t.Fatal(err)
	}
	if err := boundedFile(root, file, nil); !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("boundedFile = %v after the file was replaced, want ErrCannotEdit", err)
	}
}
