package gitops

import (
	"path/filepath"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// BenchmarkLocate measures finding the file that defines an object: one
// kustomize build with origin annotations of an overlay over a base.
func BenchmarkLocate(b *testing.B) {
	root := b.TempDir()
	copyTree(b, filepath.Join("testdata", "adopt", "overlay", "in"), root)
	b.ReportAllocs()
	for b.Loop() {
		objs, err := build(root, Kustomization{Path: "clusters/prod"})
		if err != nil || len(objs) != 1 || objs[0].file != "apps/base/inference/deployment.yaml" {
			b.Fatalf("build = %v, %v", objs, err)
		}
	}
}

// BenchmarkAdoptUnchanged measures an adoption that finds Git already
// adopted (the Delivery is in the build): one build.
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
// build, and the reads of the Delivery's and the Deployment's files.
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
