package gitops

import (
	"path/filepath"
	"testing"
)

// BenchmarkLocate measures finding the file that defines an object: one
// kustomize build with origin annotations of an overlay over a base.
func BenchmarkLocate(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "overlay", "in"), root)
	b.ReportAllocs()
	for b.Loop() {
		objs, err := build(root, "clusters/prod")
		if err != nil || len(objs) != 1 || objs[0].file != "apps/base/inference/deployment.yaml" {
			b.Fatalf("build = %v, %v", objs, err)
		}
	}
}

// BenchmarkAdoptUnchanged measures an adoption that finds Git already
// adopted: what every write pays to decide there is nothing to commit.
func BenchmarkAdoptUnchanged(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "listed", "out"), root)
	a := Adoption{Path: "apps/api", Deployment: ObjectID{Kind: "Deployment", Namespace: "backend", Name: "api"}, Strategy: "blue-green", Policy: "frontend", LiveReplicas: 2}
	b.ReportAllocs()
	for b.Loop() {
		if _, changed, err := Adopt(root, a); err != nil || changed {
			b.Fatalf("Adopt: changed=%v err=%v", changed, err)
		}
	}
}
