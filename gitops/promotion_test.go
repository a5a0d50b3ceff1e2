package gitops

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/internal/golden"
)

const deliveryFile = `# Added by sluice.
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
metadata:
  name: web
  namespace: shop
spec:
  deploymentRef:
    name: web
  strategy: canary
  replicas: 2 # serving replicas
`

const deploymentFile = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web # the server
          image: registry.example/web:v3
        - name: proxy
          image: registry.example/proxy:1
`

func promotionFixture(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "apps/web/web-delivery.yaml"), deliveryFile)
	writeTestFile(t, filepath.Join(root, "apps/web/deployment.yaml"), deploymentFile)
	return root
}

func TestRecordPromotion(t *testing.T) {
	root := promotionFixture(t)
	delivery := ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"}
	deployment := ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}
	steps := []struct {
		name string
		p    Promotion
	}{
		{"approval", Promotion{Approval: &ApprovalRecord{TemplateHash: "bbbbbbbbbb", Step: 2, ApprovedAt: "2026-11-25T10:00:00Z"}}},
		{"stable", Promotion{Stable: &StableRecord{TemplateHash: "bbbbbbbbbb", Revision: "main@sha1:0123", PromotedAt: "2026-11-25T10:05:00Z",
			Images: []ContainerImage{{"web", "registry.example/web:v2"}, {"proxy", "registry.example/proxy:1"}}}}},
		{"rejection", Promotion{Rejection: &RejectionRecord{TemplateHash: "cccccccccc", Reason: "metric success-rate failed", AnalysisRun: "web-ccc-2", Metric: "success-rate", RejectedAt: "2026-11-25T11:00:00Z"},
			Revert: []ContainerImage{{"web", "registry.example/web:v2"}}}},
	}
	for _, step := range steps {
		p := step.p
		p.Kustomization.Path, p.Delivery, p.Deployment = "apps/web", delivery, deployment
		changed, err := RecordPromotion(root, p)
		if err != nil || !changed {
			t.Fatalf("%s: changed=%v err=%v", step.name, changed, err)
		}
		// Recording the same thing again changes nothing.
		if changed, err := RecordPromotion(root, p); err != nil || changed {
			t.Fatalf("%s again: changed=%v err=%v", step.name, changed, err)
		}
		for _, f := range []string{"web-delivery.yaml", "deployment.yaml"} {
			got, err := os.ReadFile(filepath.Join(root, "apps/web", f))
			if err != nil {
				t.Fatal(err)
			}
			golden.File(t, filepath.Join("testdata", "promotion", step.name, f), got)
		}
	}
}
