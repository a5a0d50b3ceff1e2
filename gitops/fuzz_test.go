package gitops

import (
	"bytes"
	"io/fs"
	"maps"
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
	// Not t.TempDir: a fuzz seed's name holds a '#', which kustomize
	// refuses in a path.
	parent, err := os.MkdirTemp("", "sluice-fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
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
	f.Fuzz(func(t *testing.T, deployment string) { adoptTwice(t, deployment) })
}

// adoptTwice is FuzzAdopt's property; it reports whether the adoption
// changed the repository, so that its checks ran.
func adoptTwice(t *testing.T, deployment string) bool {
	root, outsideUnchanged := fuzzRoot(t, map[string]string{
		"apps/web/deployment.yaml":    deployment,
		"apps/web/kustomization.yaml": fuzzKustomization,
	})
	k := Kustomization{Path: "apps/web"}
	a := Adoption{Kustomization: k, Deployment: ObjectID{Kind: "Deployment", Name: "web"}, Strategy: "canary", LiveReplicas: 2}
	_, changed, err := Adopt(root, a)
	outsideUnchanged()
	if err != nil || !changed {
		return false
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
	return true
}

func FuzzRecordRejection(f *testing.F) {
	f.Add(deliveryFile, "metric success-rate failed: 0.91 < 0.99")
	f.Add(deliveryFile, "${NOT_A_VARIABLE} \"quoted\" 'single' # not a comment\n---\nkind: Secret")
	f.Add(deliveryFile+"  promotion: {rejection: {templateHash: x}}\n", "ünïcödé ✓")
	f.Fuzz(func(t *testing.T, delivery, reason string) { recordRejectionTwice(t, delivery, reason) })
}

// recordRejectionTwice is FuzzRecordRejection's property; it reports
// whether the record changed the repository, so that its checks ran.
func recordRejectionTwice(t *testing.T, delivery, reason string) bool {
	if !utf8.ValidString(reason) {
		// The controller takes reasons from Kubernetes conditions,
		// which are valid UTF-8.
		return false
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
		return false
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
	if err := decode(mustObject(t, *o), &got); err != nil {
		t.Fatalf("the recorded Delivery does not decode: %v", err)
	}
	if r := got.Spec.Promotion.Rejection; r == nil || r.Reason != strings.TrimSpace(reason) && r.Reason != reason {
		t.Fatalf("the recorded reason reads %+v, want %q", r, reason)
	}
	return true
}

// FuzzParkAndOptOut adopts a Deployment, records its stable template
// (which parks the Deployment at zero replicas) and opts it out again: no
// step panics, touches anything outside the repository or changes anything
// when run a second time, and the user's comments survive.
func FuzzParkAndOptOut(f *testing.F) {
	f.Add(deploymentFile)
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web # keep-me\n  namespace: shop\nspec:\n  replicas: 3 # keep-me too\n")
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 0 # sluice: the Rollout serves this app; its replicas are in the Delivery\n")
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec: {replicas: 2, template: {metadata: {labels: {app: web}}}}\n")
	f.Fuzz(func(t *testing.T, deployment string) { parkAndOptOut(t, deployment) })
}

// parkAndOptOut is FuzzParkAndOptOut's property; it reports whether every
// step changed the repository, so that all its checks ran.
func parkAndOptOut(t *testing.T, deployment string) bool {
	root, outsideUnchanged := fuzzRoot(t, map[string]string{
		"apps/web/deployment.yaml":    deployment,
		"apps/web/kustomization.yaml": fuzzKustomization,
	})
	k := Kustomization{Path: "apps/web"}
	id := ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}
	delivery := ObjectID{Kind: DeliveryKind, Namespace: "shop", Name: "web"}
	adopted, changed, err := Adopt(root, Adoption{Kustomization: k, Deployment: id, Strategy: "canary", LiveReplicas: 2})
	outsideUnchanged()
	if err != nil || !changed {
		return false
	}
	keepComments := func(step string) {
		if strings.Contains(deployment, "# keep-me") && !strings.Contains(tree(t, root)["apps/web/deployment.yaml"], "# keep-me") {
			t.Fatalf("%s lost a comment:\n%s", step, tree(t, root)["apps/web/deployment.yaml"])
		}
	}
	twice := func(step string, edit func() (bool, error)) bool {
		changed, err := edit()
		outsideUnchanged()
		if err != nil || !changed {
			return false
		}
		before := tree(t, root)
		if changed, err := edit(); err != nil || changed {
			t.Fatalf("%s a second time changed=%v, err=%v; want nothing to change", step, changed, err)
		}
		if after := tree(t, root); !maps.Equal(before, after) {
			t.Fatalf("%s a second time changed the files", step)
		}
		keepComments(step)
		return true
	}
	stable := Promotion{Kustomization: k, Delivery: delivery, Deployment: id,
		Stable: &deliveryv1.StableRelease{TemplateHash: "aaaaaaaaaa", Revision: "main@sha1:0123"}}
	if !twice("the stable record", func() (bool, error) { return RecordPromotion(root, stable) }) {
		return false
	}
	if r, ok, err := builtReplicas(root, k, id); err != nil || !ok || r != 0 {
		t.Fatalf("the parked Deployment builds with replicas %d (set %v, err %v), want 0", r, ok, err)
	}
	optOut := OptOut{Kustomization: k, Delivery: delivery, Deployment: id, Replicas: adopted.Replicas}
	if !twice("the opt-out", func() (bool, error) { return RemoveDelivery(root, optOut) }) {
		return false
	}
	if r, ok, err := builtReplicas(root, k, id); err != nil || !ok || r != adopted.Replicas {
		t.Fatalf("after the opt-out the Deployment builds with replicas %d (set %v, err %v), want %d", r, ok, err, adopted.Replicas)
	}
	return true
}

// TestFuzzPropertiesRun: on ordinary input every fuzz property runs to its
// end, so that what the fuzzers find is checked, not skipped.
func TestFuzzPropertiesRun(t *testing.T) {
	if !adoptTwice(t, deploymentFile) {
		t.Error("FuzzAdopt's property stops before its checks on an ordinary Deployment")
	}
	if !recordRejectionTwice(t, deliveryFile, "metric success-rate failed: 0.91 < 0.99") {
		t.Error("FuzzRecordRejection's property stops before its checks on an ordinary Delivery")
	}
	if !parkAndOptOut(t, deploymentFile) {
		t.Error("FuzzParkAndOptOut's property stops before its checks on an ordinary Deployment")
	}
}
