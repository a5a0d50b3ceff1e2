package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

const shopManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
# The shop's web frontend, delivered as a canary.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations:
    sluice.dev/strategy: canary
spec:
  replicas: 2 # serving replicas
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/web:v1
---
# Left alone: no annotation.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: plain
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels:
      app: plain
  template:
    metadata:
      labels:
        app: plain
    spec:
      containers:
        - name: plain
          image: registry.example/plain:v1
---
# A typo in the strategy: sluice warns and writes nothing.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
  namespace: shop
  annotations:
    sluice.dev/strategy: canery
spec:
  replicas: 1
  selector:
    matchLabels:
      app: typo
  template:
    metadata:
      labels:
        app: typo
    spec:
      containers:
        - name: typo
          image: registry.example/typo:v1
---
# A policy name that cannot be one: sluice warns about this Deployment and
# adopts the others.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: odd
  namespace: shop
  annotations:
    sluice.dev/strategy: canary
    sluice.dev/policy: Not_A/Name!
spec:
  replicas: 1
  selector:
    matchLabels:
      app: odd
  template:
    metadata:
      labels:
        app: odd
    spec:
      containers:
        - name: odd
          image: registry.example/odd:v1
`

// TestAdoptionThroughGit annotates a Deployment in a GitOps repository and
// waits for sluice's adoption commit, Flux applying it, and the Rollout
// serving, driven only by git push.
func TestAdoptionThroughGit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	repo := newGitRepo(t, "shop")
	repo.write(map[string]string{"apps/shop/manifests.yaml": shopManifests})
	userCommit := repo.commitAndPush("Add the shop")
	fluxSync(t, "shop", env.Git.RepositoryURL("shop"), "./apps/shop")

	// Flux applies the user's commit; sluice watches for that.
	var applied time.Time
	g.Eventually(func(g Gomega) {
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "shop"}})
		g.Expect(ks.Status.LastAppliedRevision).NotTo(BeEmpty())
		g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}).Status.AvailableReplicas).To(BeEquivalentTo(2))
	}, 2*time.Minute, 50*time.Millisecond).Should(Succeed())
	applied = time.Now()
	watch := watchAvailability("shop", nil)

	// sluice pushes the adoption commit.
	var adoption string
	g.Eventually(func(g Gomega) {
		repo.git("", "pull", "--quiet", "origin", "main")
		adoption = repo.git("", "rev-parse", "HEAD")
		g.Expect(adoption).NotTo(Equal(userCommit))
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
	t.Logf("Kustomization applied → adoption commit pushed in about %s", time.Since(applied).Round(10*time.Millisecond))
	g.Expect(repo.git("", "log", "-1", "--format=%an <%ae>")).To(Equal("sluice <sluice@sluice.dev>"))
	message := repo.git("", "log", "-1", "--format=%B")
	g.Expect(message).To(HavePrefix("Adopt Deployment shop/web for canary delivery"))
	g.Expect(message).To(ContainSubstring("Sluice-Delivery: shop/web\nSluice-Action: adopt\nSluice-Template-Hash: "))
	g.Expect(repo.git("", "show", "--stat", "--format=", "HEAD")).To(And(
		ContainSubstring("apps/shop/manifests.yaml"), ContainSubstring("apps/shop/web-delivery.yaml")))

	manifests := repo.git("", "show", adoption+":apps/shop/manifests.yaml") + "\n"
	g.Expect(manifests).To(Equal(strings.Replace(shopManifests, "  replicas: 2 # serving replicas\n", "", 1)))
	delivery := repo.git("", "show", adoption+":apps/shop/web-delivery.yaml") + "\n"
	g.Expect(delivery).To(ContainSubstring("  replicas: 2\n"))
	g.Expect(delivery).To(ContainSubstring("  namespace: shop\n"))

	// Flux applies the Delivery, the Rollout takes over, and the
	// Kustomization's health check passes on sluice's commit.
	committed := time.Now()
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &deliveryv1.Delivery{})
		g.Expect(err).NotTo(HaveOccurred())
	}, time.Minute, 50*time.Millisecond).Should(Succeed())
	t.Logf("adoption commit seen → Delivery applied by Flux in %s", time.Since(committed).Round(10*time.Millisecond))
	g.Eventually(func(g Gomega) {
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(r.Status.AvailableReplicas).To(BeEquivalentTo(2))
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(dep.Spec.Replicas).To(HaveValue(BeEquivalentTo(0)))
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "shop"}})
		g.Expect(conditions.IsReady(ks)).To(BeTrue())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// The plain Deployment is untouched; the typo gets a warning and no
	// Delivery.
	plain := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "plain"}})
	g.Expect(plain.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
	for _, name := range []string{"plain", "typo", "odd"} {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), name)
	}
	g.Eventually(func(g Gomega) []string {
		var events corev1.EventList
		g.Expect(k8sClient.List(ctx, &events, client.InNamespace("shop"))).To(Succeed())
		var msgs []string
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "typo" && e.Reason == "InvalidStrategy" {
				msgs = append(msgs, e.Message)
			}
		}
		return msgs
	}, 30*time.Second, 200*time.Millisecond).Should(ContainElement(`annotation sluice.dev/strategy: "canery" is not a strategy; use canary or blue-green`))
	g.Eventually(func(g Gomega) []string {
		return events(g, "Deployment", "shop", "odd", deliveryv1.InvalidPolicyReason)
	}, 30*time.Second, 200*time.Millisecond).Should(ContainElement(HavePrefix(`annotation sluice.dev/policy: "Not_A/Name!" is not a DeliveryPolicy name`)))
	g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "odd"}}).Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
	// After the adoption, sluice records the first stable template and
	// parks the Deployment at zero replicas in Git, so that a rebuilt
	// cluster does not start it; nothing else is written.
	g.Eventually(func(g Gomega) string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "--format=%an: %s")
	}, time.Minute, 200*time.Millisecond).Should(MatchRegexp(
		`^sluice: Promote shop/web: template [0-9a-f]{10} is stable\nsluice: Adopt Deployment shop/web for canary delivery\nA User: Add the shop$`))
	g.Expect(readFile(t, repo, "apps/shop/manifests.yaml")).To(Equal(strings.Replace(shopManifests,
		"  replicas: 2 # serving replicas\n", "  replicas: 0 # sluice: the Rollout serves this app; its replicas are in the Delivery\n", 1)))
	// Flux applies the parked Deployment; it stays at zero.
	g.Consistently(func(g Gomega) {
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(dep.Spec.Replicas).To(HaveValue(BeEquivalentTo(0)))
		g.Expect(dep.Status.Replicas).To(BeEquivalentTo(0))
	}, 3*time.Second, 100*time.Millisecond).Should(Succeed())

	// A repository that lost the zero (or was recorded before sluice
	// parked Deployments) is parked again.
	replaceInFile(t, filepath.Join(repo.dir, "apps/shop/manifests.yaml"),
		"  replicas: 0 # sluice: the Rollout serves this app; its replicas are in the Delivery\n", "")
	repo.commitAndPush("Drop the Deployment's replicas")
	g.Eventually(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "-1", "--format=%an: %s")
	}, time.Minute, 200*time.Millisecond).Should(Equal("sluice: Park Deployment shop/web for sluice"))
	g.Expect(readFile(t, repo, "apps/shop/manifests.yaml")).To(ContainSubstring(
		"  replicas: 0 # sluice: the Rollout serves this app; its replicas are in the Delivery\n"))
	g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}).Status.Replicas).To(BeEquivalentTo(0))

	// The user opts out by removing the annotation; sluice hands the
	// Deployment back with one commit, and the Rollout serves until the
	// Deployment has its replicas.
	replaceInFile(t, filepath.Join(repo.dir, "apps/shop/manifests.yaml"), "  annotations:\n    sluice.dev/strategy: canary\n", "")
	optOutRequest := repo.commitAndPush("Stop progressive delivery of the shop's web")
	pushed := time.Now()
	g.Eventually(func(g Gomega) string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "-1", "--format=%B")
	}, time.Minute, 200*time.Millisecond).Should(And(
		HavePrefix("Hand Deployment shop/web back from sluice"),
		HaveSuffix("Sluice-Delivery: shop/web\nSluice-Action: opt-out")))
	t.Logf("annotation removed → opt-out commit pushed in %s", time.Since(pushed).Round(10*time.Millisecond))
	g.Expect(repo.git("", "diff", "--stat", optOutRequest, "HEAD")).To(And(
		ContainSubstring("apps/shop/manifests.yaml"), ContainSubstring("apps/shop/web-delivery.yaml")))
	handedBack := strings.Replace(shopManifests, "  annotations:\n    sluice.dev/strategy: canary\n", "", 1)
	handedBack = strings.Replace(handedBack, "  replicas: 2 # serving replicas\n", "  replicas: 2\n", 1)
	g.Expect(readFile(t, repo, "apps/shop/manifests.yaml")).To(Equal(handedBack))
	_, err := os.Stat(filepath.Join(repo.dir, "apps/shop/web-delivery.yaml"))
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the Delivery's file is gone")

	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Delivery is pruned")
		err = k8sClient.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Rollout is removed")
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(dep.Status.AvailableReplicas).To(BeEquivalentTo(2))
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "shop"}})
		g.Expect(conditions.IsReady(ks)).To(BeTrue())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("annotation removed → handed back (Delivery and Rollout gone, Deployment serving) in %s", time.Since(pushed).Round(10*time.Millisecond))
	// Nothing more is written, and Flux keeps the Deployment at 2.
	g.Consistently(func(g Gomega) {
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
		g.Expect(dep.Spec.Replicas).To(HaveValue(BeEquivalentTo(2)))
	}, 2*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(repo.git("", "log", "--format=%an: %s", "-2")).To(Equal(
		"sluice: Hand Deployment shop/web back from sluice\nA User: Stop progressive delivery of the shop's web"))

	minAvailable, samples, _ := watch.finish()
	t.Logf("available replicas never fell below %d in %d samples", minAvailable, samples)
	g.Expect(minAvailable).To(BeNumerically(">=", 2))
}

// readFile reads a file of the working copy.
func readFile(t *testing.T, repo *gitRepo, path string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo.dir, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
