package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallManifestsServerDryRun renders the install YAML from
// config/default and checks it against the real API server: CRDs, RBAC and
// the manager Deployment must all be accepted.
func TestInstallManifestsServerDryRun(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(root, "bin", "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
		return cmd.CombinedOutput()
	}
	// A server-side dry run cannot create the namespace that the objects
	// after it live in, so the namespace is created for real first.
	if out, err := kubectl("create", "namespace", "sluice-system"); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		t.Fatalf("creating namespace sluice-system: %v\n%s", err, out)
	}
	if out, err := kubectl("apply", "--dry-run=server", "-k", filepath.Join(root, "config", "default")); err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k config/default: %v\n%s", err, out)
	}

	// The one-file install that `make release-manifests` renders.
	render := exec.Command("make", "-C", root, "release-manifests", "IMG=registry.example/sluice:test")
	if out, err := render.CombinedOutput(); err != nil {
		t.Fatalf("make release-manifests: %v\n%s", err, out)
	}
	install := filepath.Join(root, "dist", "sluice.yaml")
	data, err := os.ReadFile(install)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "image: registry.example/sluice:test") {
		t.Fatalf("dist/sluice.yaml does not run the image asked for")
	}
	out, err := kubectl("apply", "--server-side", "--dry-run=server", "-f", install)
	if err != nil {
		t.Fatalf("kubectl apply --server-side --dry-run=server -f dist/sluice.yaml: %v\n%s", err, out)
	}
	for _, want := range []string{
		"namespace/sluice-system serverside-applied",
		"customresourcedefinition.apiextensions.k8s.io/deliveries.delivery.sluice.dev",
		"clusterrole.rbac.authorization.k8s.io/sluice-manager",
		"deployment.apps/sluice",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dry run did not mention %s:\n%s", want, out)
		}
	}
}
