package gitops

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// BenchmarkLocate measures finding the file that defines an object: one
// kustomize build with origin annotations of an overlay over a base, not
// remembered.
func BenchmarkLocate(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "overlay", "in"), root)
	b.ReportAllocs()
	for b.Loop() {
		objs, err := buildFiles(root, Kustomization{Path: "clusters/prod"}, nil)
		if err != nil || len(objs) != 1 || objs[0].file != "apps/base/inference/deployment.yaml" {
			b.Fatalf("build = %v, %v", objs, err)
		}
	}
}

// BenchmarkAdoptUnchanged measures an adoption that finds Git already
// adopted (the Delivery is in the build): one build, remembered (what it
// read is read again and compared).
func BenchmarkAdoptUnchanged(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "listed", "out"), root)
	a := Adoption{Kustomization: Kustomization{Path: "apps/api"}, Deployment: ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"}, Strategy: "blue-green", Policy: "frontend", LiveReplicas: 2}
	b.ReportAllocs()
	for b.Loop() {
		if _, changed, err := Adopt(root, a); err != nil || changed {
			b.Fatalf("Adopt: changed=%v err=%v", changed, err)
		}
	}
}

// BenchmarkParkUnchanged measures what a Healthy Delivery's promotion
// reconcile pays in Git when Git already records its stable template and
// parks it (the check at every revision its Kustomization applies): one
// build, remembered, and the reads of the Delivery's and the Deployment's
// files.
func BenchmarkParkUnchanged(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "listed", "out"), root)
	p := Promotion{Kustomization: Kustomization{Path: "apps/api"},
		Delivery:   ObjectID{Kind: "Delivery", Namespace: "backend", Name: "api"},
		Deployment: ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"},
		Switched:   []ObjectID{{Kind: "Service", Name: "api"}},
		Stable:     &deliveryv1.StableRelease{TemplateHash: "aaaaaaaaaa", Revision: "main@sha1:0123", PromotedAt: at("2026-11-25T10:05:00Z")}}
	if changed, err := RecordPromotion(root, p); err != nil || !changed {
		b.Fatalf("first record: changed=%v err=%v", changed, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if changed, err := RecordPromotion(root, p); err != nil || changed {
			b.Fatalf("RecordPromotion: changed=%v err=%v", changed, err)
		}
	}
}

// BenchmarkAdoptFolder measures adopting every Deployment of one folder of
// a fleet (100 folders of 10 Deployments, as make bench-scale pushes), one
// adoption after another on the same tree: each checked at once, as a
// write on its own is, and as a batch of writes sharing a commit is.
func BenchmarkAdoptFolder(b *testing.B) {
	const folders, apps = 100, 10
	src := b.TempDir()
	writeFleet(b, src, folders, apps)
	k := Kustomization{Path: "fleet/k042"}
	adopt := func(b *testing.B, root string, j int) (bool, error) {
		a := Adoption{Kustomization: k, Deployment: ObjectID{Kind: "Deployment", Namespace: "fleet-042", Name: fmt.Sprintf("app-%03d", j)}, Strategy: "canary", LiveReplicas: 1}
		_, changed, err := Adopt(root, a)
		if err != nil || !changed {
			b.Fatalf("Adopt: changed=%v err=%v", changed, err)
		}
		return changed, err
	}
	for _, mode := range []struct {
		name  string
		edits func(b *testing.B, root string)
	}{
		{"each checked at once", func(b *testing.B, root string) {
			for j := range apps {
				_, _ = adopt(b, root, j)
			}
		}},
		{"in a batch", func(b *testing.B, root string) {
			if _, err := inBatch(root, apps, func(j int) (bool, error) { return adopt(b, root, j) }); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				root := b.TempDir()
				copyTree(b, src, root)
				b.StartTimer()
				mode.edits(b, root)
			}
		})
	}
}

// writeFleet writes, below root, the folders fleet/kNNN of make
// bench-scale's fleet: each a namespace fleet-NNN and apps annotated
// Deployments app-NNN in it.
func writeFleet(b testing.TB, root string, folders, apps int) {
	for i := range folders {
		dir := filepath.Join(root, "fleet", fmt.Sprintf("k%03d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		ns := fmt.Sprintf("fleet-%03d", i)
		write(b, filepath.Join(dir, "namespace.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n")
		for j := range apps {
			write(b, filepath.Join(dir, fmt.Sprintf("app-%03d.yaml", j)), fmt.Sprintf(fleetDeployment, fmt.Sprintf("app-%03d", j), ns))
		}
	}
}

const fleetDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
  annotations:
    sluice.dev/strategy: canary
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      containers:
        - name: app
          image: registry.example/app:v1
`

func write(b testing.TB, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}
