package gitops

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// The fuzz targets run the document edits on what a repository may hold.
// `make fuzz` runs them for a while; `make test` runs their seeds.

const fuzzKustomization = "resources:\n  - deployment.yaml\n"

// fuzzRoot makes a repository folder inside a parent that also holds a
// file sluice must never touch, and returns the repository's root and a
// check that nothing outside it changed.
func fuzzRoot(t *testing.T, files map[string]string) (root string, outsideUnchanged func()) {
	parent := t.TempDir()
	root = filepath.Join(parent, "repo")
	outside := filepath.Join(parent, "outside.yaml")
	if err := os.WriteFile(outside, []byte(fuzzKustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, content := range files {
		writeTestFile(t, filepath.Join(root, path), content)
	}
	return root, func() {
		entries, _ := os.ReadDir(parent)
		if len(entries) != 2 {
			t.Fatalf("the parent folder holds %d entries, want the repository and outside.yaml", len(entries))
		}
		if data, _ := os.ReadFile(outside); string(data) != fuzzKustomization {
			t.Fatalf("a file outside the repository changed: %q", data)
		}
	}
}

// tree reads every file below root.
func tree(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			out[relTo(root, p)] = string(data)
		}
		return nil
	})
	return out
}

func FuzzAdopt(f *testing.F) {
	for _, layout := range []string{"plain-folder", "listed", "overlay", "replicas-field", "patched"} {
		files, _ := filepath.Glob(filepath.Join("testdata", "adopt", layout, "in", "*", "*", "*.yaml"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil && bytes.Contains(data, []byte("kind: Deployment")) {
				f.Add(string(data))
			}
		}
	}
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web # keep-me\nspec:\n  replicas: ${REPLICAS}\n")
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata: &m\n  name: web\nspec: *m\n")
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: [1, 2]\n")
	f.Fuzz(func(t *testing.T, deployment string) {
		root, outsideUnchanged := fuzzRoot(t, map[string]string{
			"apps/web/deployment.yaml":    deployment,
			"apps/web/kustomization.yaml": fuzzKustomization,
		})
		k := Kustomization{Path: "apps/web"}
		a := Adoption{Kustomization: k, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary", LiveReplicas: 2}
		_, changed, err := Adopt(root, a)
		outsideUnchanged()
		if err != nil || !changed {
			return
		}
		after := tree(t, root)
		if _, changed, err := Adopt(root, a); err != nil || changed {
			t.Fatalf("a second adoption changed=%v, err=%v; want nothing to change", changed, err)
		}
		if again := tree(t, root); len(again) != len(after) {
			t.Fatalf("a second adoption changed the files")
		}
		if strings.Contains(deployment, "# keep-me") && !strings.Contains(after["apps/web/deployment.yaml"], "# keep-me") {
			t.Fatalf("the adoption lost a comment:\n%s", after["apps/web/deployment.yaml"])
		}
	})
}

func FuzzRecordRejection(f *testing.F) {
	f.Add(deliveryFile, "metric success-rate failed: 0.91 < 0.99")
	f.Add(deliveryFile, "${NOT_A_VARIABLE} \"quoted\" 'single' # not a comment\n---\nkind: Secret")
	f.Add(deliveryFile+"  promotion: {rejection: {templateHash: x}}\n", "ünïcödé ✓")
	f.Fuzz(func(t *testing.T, delivery, reason string) {
		if !utf8.ValidString(reason) {
			// The controller takes reasons from Kubernetes conditions,
			// which are valid UTF-8.
			return
		}
		root, outsideUnchanged := fuzzRoot(t, map[string]string{
			"apps/web/web-delivery.yaml":  delivery,
			"apps/web/deployment.yaml":    deploymentFile,
			"apps/web/kustomization.yaml": "resources:\n  - deployment.yaml\n  - web-delivery.yaml\n",
		})
		p := Promotion{Kustomization: Kustomization{Path: "apps/web"}, Delivery: ObjectID{Kind: DeliveryKind, Namespace: "shop", Name: "web"},
			Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"},
			Rejection:  &deliveryv1.Rejection{TemplateHash: "cccccccccc", Reason: reason}}
		changed, err := RecordPromotion(root, p)
		outsideUnchanged()
		if err != nil || !changed {
			return
		}
		if changed, err := RecordPromotion(root, p); err != nil || changed {
			t.Fatalf("a second record changed=%v, err=%v; want nothing to change", changed, err)
		}
		// What Git holds reads back as the reason recorded.
		objs, err := build(root, p.Kustomization)
		if err != nil {
			t.Fatalf("the recorded Delivery does not build: %v", err)
		}
		o := find(objs, p.Delivery)
		if o == nil {
			t.Fatal("the Delivery left the build")
		}
		var got deliveryv1.Delivery
		if err := decode(o.obj, &got); err != nil {
			t.Fatalf("the recorded Delivery does not decode: %v", err)
		}
		if r := got.Spec.Promotion.Rejection; r == nil || r.Reason != strings.TrimSpace(reason) && r.Reason != reason {
			t.Fatalf("the recorded reason reads %+v, want %q", r, reason)
		}
	})
}
