package e2e

import (
	"context"
	"os"
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

// tillAPI is a second app of the same Kustomization, in its own file.
const tillAPI = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: till
  annotations:
    sluice.dev/strategy: canary
spec:
  replicas: 1
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
        - name: api
          image: registry.example/till-api:v1
`

// TestOptOutWithoutPrune opts two apps of one Kustomization out in one
// commit, through a Kustomization that does not prune: sluice removes each
// Delivery itself once Flux has applied its opt-out commit, and the apps are
// handed back without a drop.
func TestOptOutWithoutPrune(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	repo := newGitRepo(t, "till")
	repo.write(map[string]string{"apps/till/manifests.yaml": tillManifests, "apps/till/api.yaml": tillAPI})
	repo.commitAndPush("Add the till")
	fluxSync(t, "till", env.Git.RepositoryURL("till"), "./apps/till")
	ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "till"}})
	update(g, ks, func() { ks.Spec.Prune = false })

	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "till", Name: "web"}}
	api := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "till", Name: "api"}}
	g.Eventually(func(g Gomega) {
		for _, d := range []*deliveryv1.Delivery{delivery, api} {
			d := getObj(g, d.DeepCopy())
			g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
			g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		}
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		// The stable records of one Kustomization may share a commit.
		return repo.git("", "log", "--format=%B")
	}, time.Minute, 200*time.Millisecond).Should(And(ContainSubstring("Promote till/web"), ContainSubstring("Promote till/api")))
	watch := watchAvailability("till", nil)

	for _, file := range []string{"manifests.yaml", "api.yaml"} {
		replaceInFile(t, filepath.Join(repo.dir, "apps/till", file), "  annotations:\n    sluice.dev/strategy: canary\n", "")
	}
	repo.commitAndPush("Stop progressive delivery of the till")
	pushed := time.Now()
	g.Eventually(func(g Gomega) {
		for name, replicas := range map[string]int32{"web": 2, "api": 1} {
			key := client.ObjectKey{Namespace: "till", Name: name}
			err := k8sClient.Get(ctx, key, &deliveryv1.Delivery{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Delivery %s is deleted", name)
			err = k8sClient.Get(ctx, key, &rolloutsv1.Rollout{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Rollout %s is removed", name)
			dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "till", Name: name}})
			g.Expect(dep.Status.AvailableReplicas).To(BeEquivalentTo(replicas))
		}
		g.Expect(conditions.IsReady(getObj(g, ks.DeepCopy()))).To(BeTrue())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("annotation removed → handed back without prune in %s", time.Since(pushed).Round(10*time.Millisecond))
	// The Delivery stays gone: Flux applied the opt-out commit before
	// sluice deleted it.
	g.Consistently(func(g Gomega) {
		for _, d := range []*deliveryv1.Delivery{delivery, api} {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(d), &deliveryv1.Delivery{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		}
	}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "-2", "--format=%B")).To(And(
		ContainSubstring("Hand Deployment till/web back from sluice"), ContainSubstring("Hand Deployment till/api back from sluice")))
	_, err := os.Stat(filepath.Join(repo.dir, "apps/till/api-delivery.yaml"))
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the api Delivery's file is gone")
	g.Expect(readFile(t, repo, "apps/till/api.yaml")).To(ContainSubstring("  replicas: 1\n"))

	minAvailable, samples, _ := watch.finish()
	t.Logf("available replicas never fell below %d in %d samples", minAvailable, samples)
	g.Expect(minAvailable).To(BeNumerically(">=", 2))
}
