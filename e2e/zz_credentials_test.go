package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// TestNoCredentialLeaks runs after the scenarios that pushed and fetched
// with the Git server's credentials, and looks for the secret in
// everything sluice writes: its logs, the events, the Deliveries' status
// and the commit messages of every repository.
func TestNoCredentialLeaks(t *testing.T) {
	secret := env.Git.Password
	if len(secret) < 12 {
		t.Fatalf("the Git password %q is too short to search for", secret)
	}
	ctx := context.Background()

	sluiceLog, err := os.ReadFile(filepath.Join(env.LogDir(), "sluice.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sluiceLog) == 0 {
		t.Fatal("sluice's log is empty")
	}
	places := map[string]string{"sluice's log": string(sluiceLog)}

	var events corev1.EventList
	if err := k8sClient.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range events.Items {
		b.WriteString(e.Message + "\n")
	}
	places["events"] = b.String()

	var deliveries deliveryv1.DeliveryList
	if err := k8sClient.List(ctx, &deliveries); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	for _, d := range deliveries.Items {
		for _, c := range d.Status.Conditions {
			b.WriteString(c.Message + "\n")
		}
	}
	places["Delivery status"] = b.String()

	repos, err := filepath.Glob(filepath.Join(env.Git.Root, "*.git"))
	if err != nil || len(repos) == 0 {
		t.Fatalf("no repositories to search: %v", err)
	}
	for _, repo := range repos {
		out, err := exec.Command("git", "-C", repo, "log", "--all", "--format=%B").CombinedOutput()
		if err != nil {
			t.Fatalf("git log in %s: %v\n%s", repo, err, out)
		}
		places["commit messages of "+filepath.Base(repo)] = string(out)
	}

	for where, text := range places {
		for _, s := range []string{secret, env.Git.ReadOnlyPassword} {
			if strings.Contains(text, s) {
				t.Errorf("a Git password appears in %s", where)
			}
		}
	}
}
