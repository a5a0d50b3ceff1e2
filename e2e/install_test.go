package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallManifestsServerDryRun checks config/default against the real
// API server: CRDs, RBAC and the manager Deployment must all be accepted.
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
	out, err := kubectl("apply", "--server-side", "--dry-run=server", "-k", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatalf("kubectl apply --server-side --dry-run=server -k config/default: %v\n%s", err, out)
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
