package gitops

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

func TestEditDelivery(t *testing.T) {
	root := promotionFixture(t)
	writeTestFile(t, filepath.Join(root, "apps/web/web-delivery.yaml"), deliveryFile+`  promotion:
    rejection:
      templateHash: cccccccccc
      reason: metric success-rate failed # by Argo
`)
	base := DeliveryEdit{Kustomization: Kustomization{Path: "apps/web"},
		Delivery:   ObjectID{Kind: "Delivery", Namespace: "shop", Name: "web"},
		Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: "web"}}
	read := func(f string) string {
		data, err := os.ReadFile(filepath.Join(root, "apps/web", f))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	apply := func(name string, e DeliveryEdit, want bool) {
		t.Helper()
		changed, err := EditDelivery(root, e)
		if err != nil || changed != want {
			t.Fatalf("%s: changed=%v err=%v, want changed=%v", name, changed, err, want)
		}
	}

	yes, no := true, false
	suspend := base
	suspend.Suspend = &yes
	apply("suspend", suspend, true)
	apply("suspend again", suspend, false)
	if got := read("web-delivery.yaml"); !strings.Contains(got, "  replicas: 2 # serving replicas\n  promotion:\n") || !strings.Contains(got, "\n  suspend: true\n") {
		t.Fatalf("suspended, the Delivery says\n%s", got)
	}
	resume := base
	resume.Suspend = &no
	apply("resume", resume, true)
	if got := read("web-delivery.yaml"); strings.Contains(got, "suspend") {
		t.Fatalf("resumed, the Delivery says\n%s", got)
	}

	retry := base
	retry.ClearRejection = true
	apply("retry", retry, true)
	apply("retry again", retry, false)
	if got, want := read("web-delivery.yaml"), deliveryFile; got != want {
		t.Fatalf("retried, the Delivery says\n%s\nwant\n%s", got, want)
	}

	rollback := base
	rollback.Images = []deliveryv1.ContainerImage{{Name: "web", Image: "registry.example/web:v1"}}
	apply("rollback", rollback, true)
	apply("rollback again", rollback, false)
	if got, want := read("deployment.yaml"), strings.Replace(deploymentFile, "web:v3", "web:v1", 1); got != want {
		t.Fatalf("rolled back, the Deployment says\n%s\nwant\n%s", got, want)
	}

	d, err := BuiltDelivery(root, base.Kustomization, base.Delivery)
	if err != nil || d == nil || d.Spec.DeploymentRef.Name != "web" || d.GetReplicas() != 2 {
		t.Fatalf("BuiltDelivery = %+v, %v", d, err)
	}

	missing := base
	missing.Delivery.Name = "api"
	missing.Suspend = &yes
	if _, err := EditDelivery(root, missing); !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("editing a Delivery the build lacks: %v, want ErrCannotEdit", err)
	}
}
