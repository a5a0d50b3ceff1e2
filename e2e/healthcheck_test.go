package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// TestFluxHealthChecks shows what Flux's health checks make of a Delivery:
// a Kustomization with wait: true is not Ready while its canary waits for
// approval, becomes Ready when the canary completes, and fails its health
// check when the canary is rejected; a Kustomization that dependsOn it waits.
func TestFluxHealthChecks(t *testing.T) {
	g := NewWithT(t)
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	var failing atomic.Bool
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rate := "1.0"
		if failing.Load() {
			rate = "0.5"
		}
		fmt.Fprintf(w, `{"successRate": %s}`, rate)
	}))
	t.Cleanup(metric.Close)

	deployment := webApp("bank", 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated")
	policy := strings.NewReplacer("namespace: store", "namespace: bank", "  git:\n    rollback: revert\n", "").Replace(storePolicy(metric.URL))
	configMap := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  namespace: bank\ndata:\n  version: \"%s\"\n"
	repo := newGitRepo(t, "bank")
	repo.write(map[string]string{
		"apps/bank/deployment.yaml": deployment,
		"apps/bank/policy.yaml":     policy,
		"apps/after/config.yaml":    fmt.Sprintf(configMap, "1"),
	})
	repo.commitAndPush("Add the bank")
	fluxSyncWith(t, "bank", env.Git.RepositoryURL("bank"), "./apps/bank", "./apps/after")

	ks := func(g Gomega, name string) *kustomizev1.Kustomization {
		return getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}})
	}
	version := func(g Gomega) string {
		return getObj(g, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bank", Name: "after"}}).Data["version"]
	}
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "bank", Name: "web"}}
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(conditions.IsReady(ks(g, "bank"))).To(BeTrue())
		g.Expect(conditions.IsReady(ks(g, "bank-after-1"))).To(BeTrue())
		g.Expect(version(g)).To(Equal("1"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	step("adopted, stable recorded, both Kustomizations Ready")

	// One commit releases v2 and changes what the dependent applies.
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/bank/deployment.yaml"), "registry.example/web:v1", "registry.example/web:v2")
	repo.write(map[string]string{"apps/after/config.yaml": fmt.Sprintf(configMap, "2")})
	repo.commitAndPush("Release web v2 and the config after it")
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getObj(g, delivery.DeepCopy()).Status.Phase },
		2*time.Minute, 100*time.Millisecond).Should(Equal(deliveryv1.PhaseWaitingForApproval))
	// kustomize-controller marks the Kustomization as reconciling right
	// after it applied the Delivery; from then on it stays not Ready.
	g.Eventually(func(g Gomega) bool { return conditions.IsReady(ks(g, "bank")) },
		30*time.Second, 100*time.Millisecond).Should(BeFalse())
	g.Consistently(func(g Gomega) {
		g.Expect(conditions.IsReady(ks(g, "bank"))).To(BeFalse())
		g.Expect(version(g)).To(Equal("1"))
	}, 8*time.Second, 200*time.Millisecond).Should(Succeed())

	step("waiting at the gate; the dependent waited")

	// The approval merged: the canary completes, then the dependent applies.
	var branch string
	g.Eventually(func(g Gomega) {
		branch = getObj(g, delivery.DeepCopy()).Status.PendingPromotionBranch
		g.Expect(branch).NotTo(BeEmpty())
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	repo.git("", "fetch", "--quiet", "origin", branch)
	repo.git("", "merge", "--quiet", "--no-ff", "-m", "Approve web v2", "FETCH_HEAD")
	repo.git("", "push", "--quiet", "origin", "HEAD:main")
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		// sluice's promotion commit is in, so the next push starts from it.
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
		g.Expect(conditions.IsReady(ks(g, "bank"))).To(BeTrue())
		g.Expect(version(g)).To(Equal("2"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	step("promoted; the dependent applied")

	// v3 fails its analysis: the health check fails.
	failing.Store(true)
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/bank/deployment.yaml"), "registry.example/web:v2", "registry.example/web:v3")
	repo.commitAndPush("Release web v3")
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		// sluice's rejection commit is in, so the next push starts from it.
		g.Expect(d.Spec.Promotion.Rejection).NotTo(BeNil())
		k := ks(g, "bank")
		g.Expect(conditions.IsFalse(k, meta.ReadyCondition)).To(BeTrue())
		g.Expect(conditions.GetMessage(k, meta.ReadyCondition)).To(ContainSubstring("Delivery/bank/web"))
	}, 3*time.Minute, 200*time.Millisecond).Should(Succeed())
	step("rejected; the health check failed")
	t.Logf("Kustomization bank: %s", conditions.GetMessage(ks(g, "bank"), meta.ReadyCondition))

	// The user opts out while the health check fails: Flux does not record
	// the annotation's removal as applied, and sluice sees it on the
	// Deployment. The hand-back makes the Kustomization Ready again.
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/bank/deployment.yaml"),
		"  annotations:\n    sluice.dev/strategy: canary\n    sluice.dev/policy: gated\n", "")
	repo.commitAndPush("Stop progressive delivery of web")
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Delivery is pruned")
		err = k8sClient.Get(context.Background(), client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Rollout is removed")
		g.Expect(conditions.IsReady(ks(g, "bank"))).To(BeTrue())
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "-1", "--format=%s", "--author=sluice")).To(Equal("Hand Deployment bank/web back from sluice"))
	step("opted out while failing; handed back and Ready")
}

func replaceInFile(t *testing.T, path, from, to string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), from) {
		t.Fatalf("%s does not contain %q", path, from)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), from, to, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}
