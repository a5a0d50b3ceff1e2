package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

var tillManifests = webApp("till", 2, "registry.example/till:v1", "sluice.dev/strategy: canary")

// TestOptOutWithoutPrune opts out through a Kustomization that does not
// prune: sluice removes the Delivery itself once Flux has applied the
// opt-out commit, and the app is handed back without a drop.
func TestOptOutWithoutPrune(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	repo := newGitRepo(t, "till")
	repo.write(map[string]string{"apps/till/manifests.yaml": tillManifests})
	repo.commitAndPush("Add the till")
	fluxSync(t, "till", env.Git.RepositoryURL("till"), "./apps/till")
	ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "till"}})
	update(g, ks, func() { ks.Spec.Prune = false })

	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "till", Name: "web"}}
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "-1", "--format=%s")
	}, time.Minute, 200*time.Millisecond).Should(HavePrefix("Promote till/web"))
	watch := watchAvailability("till", nil)

	replaceInFile(t, filepath.Join(repo.dir, "apps/till/manifests.yaml"), "  annotations:\n    sluice.dev/strategy: canary\n", "")
	repo.commitAndPush("Stop progressive delivery of the till")
	pushed := time.Now()
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Delivery is deleted")
		err = k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Rollout is removed")
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "till", Name: "web"}})
		g.Expect(dep.Status.AvailableReplicas).To(BeEquivalentTo(2))
		g.Expect(conditions.IsReady(getObj(g, ks.DeepCopy()))).To(BeTrue())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("annotation removed → handed back without prune in %s", time.Since(pushed).Round(10*time.Millisecond))
	// The Delivery stays gone: Flux applied the opt-out commit before
	// sluice deleted it.
	g.Consistently(func() bool {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		return apierrors.IsNotFound(err)
	}, 3*time.Second, 200*time.Millisecond).Should(BeTrue())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "-1", "--format=%s")).To(Equal("Hand Deployment till/web back from sluice"))

	minAvailable, samples, _ := watch.finish()
	t.Logf("available replicas never fell below %d in %d samples", minAvailable, samples)
	g.Expect(minAvailable).To(BeNumerically(">=", 2))
}
