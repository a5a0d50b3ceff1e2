package gitops

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// at is a time of the records, as the controllers take it.
func at(s string) *metav1.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &metav1.Time{Time: t}
}

func TestRecordPromotion(t *testing.T) {
	root := promotionFixture(t)
	delivery := ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"}
	deployment := ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}
	steps := []struct {
		name string
		p    Promotion
	}{
		{"approval", Promotion{Approval: &deliveryv1.Approval{TemplateHash: "bbbbbbbbbb", Step: 2, ApprovedAt: at("2026-11-25T10:00:00Z")}}},
		{"stable", Promotion{Stable: &deliveryv1.StableRelease{TemplateHash: "bbbbbbbbbb", Revision: "main@sha1:0123", PromotedAt: at("2026-11-25T10:05:00Z"),
			Images: []deliveryv1.ContainerImage{{Name: "web", Image: "registry.example/web:v2"}, {Name: "proxy", Image: "registry.example/proxy:1"}}}}},
		{"rejection", Promotion{Rejection: &deliveryv1.Rejection{TemplateHash: "cccccccccc", Reason: "metric success-rate failed", AnalysisRun: "web-ccc-2", Metric: "success-rate", RejectedAt: at("2026-11-25T11:00:00Z")},
			Revert: []deliveryv1.ContainerImage{{Name: "web", Image: "registry.example/web:v2"}}}},
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

// TestApprovalsOfEarlierCandidatesGo: a Delivery whose approvals of
// rejected candidates filled the API's bound of 32 takes a new approval,
// and keeps only the approvals of the candidate that runs.
func TestApprovalsOfEarlierCandidatesGo(t *testing.T) {
	root := promotionFixture(t)
	var b strings.Builder
	b.WriteString(deliveryFile + "  promotion:\n    approvals:\n")
	for i := range 31 {
		fmt.Fprintf(&b, "      - templateHash: old%07d\n        step: 1\n", i)
	}
	b.WriteString("      - templateHash: bbbbbbbbbb\n        step: 1\n")
	writeTestFile(t, filepath.Join(root, "apps/web/web-delivery.yaml"), b.String())
	delivery := ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"}
	changed, err := RecordPromotion(root, Promotion{Kustomization: Kustomization{Path: "apps/web"}, Delivery: delivery,
		Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"},
		Approval:   &deliveryv1.Approval{TemplateHash: "bbbbbbbbbb", Step: 3}})
	if err != nil || !changed {
		t.Fatalf("RecordPromotion = %v, %v", changed, err)
	}
	data, err := os.ReadFile(filepath.Join(root, "apps/web/web-delivery.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := deliveryFile + "  promotion:\n    approvals:\n      - templateHash: bbbbbbbbbb\n        step: 1\n      - templateHash: bbbbbbbbbb\n        step: 3\n"
	if string(data) != want {
		t.Fatalf("the Delivery says\n%s\nwant\n%s", data, want)
	}
}
