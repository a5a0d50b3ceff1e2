package e2e

import (
	"path/filepath"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const rawRollout = `apiVersion: v1
kind: Namespace
metadata:
  name: raw
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: raw
spec:
  replicas: 1
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
  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {}
`

// rolloutHealthCheckExprs is the recipe in docs/flux-health-checks.md for
// raw Rollouts, whose string status.observedGeneration kstatus cannot read.
var rolloutHealthCheckExprs = []kustomize.CustomHealthCheck{{
	APIVersion: "argoproj.io/v1alpha1",
	Kind:       "Rollout",
	HealthCheckExpressions: kustomize.HealthCheckExpressions{
		Current:    "status.phase == 'Healthy' && status.observedGeneration == string(metadata.generation)",
		InProgress: "status.phase in ['Progressing', 'Paused'] || status.observedGeneration != string(metadata.generation)",
		Failed:     "status.phase == 'Degraded'",
	},
}}

// TestRawRolloutHealthCheckExprs checks the healthCheckExprs recipe for raw
// Argo Rollouts with the real kustomize-controller: Ready when the Rollout is
// healthy, not Ready while it waits at a pause.
func TestRawRolloutHealthCheckExprs(t *testing.T) {
	g := NewWithT(t)

	repo := newGitRepo(t, "raw")
	repo.write(map[string]string{"apps/raw/rollout.yaml": rawRollout})
	repo.commitAndPush("Add a raw Rollout")
	fluxSync(t, "raw", env.Git.RepositoryURL("raw"), "./apps/raw")
	g.Eventually(func(g Gomega) {
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "raw"}})
		update(g, ks, func() {
			ks.Spec.HealthCheckExprs = rolloutHealthCheckExprs
		})
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	ks := func(g Gomega) *kustomizev1.Kustomization {
		return getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "raw"}})
	}
	g.Eventually(func(g Gomega) {
		k := ks(g)
		g.Expect(k.Status.ObservedGeneration).To(Equal(k.Generation))
		g.Expect(conditions.IsReady(k)).To(BeTrue(), conditions.GetMessage(k, meta.ReadyCondition))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())

	// A new image stops at the pause: the health check waits.
	replaceInFile(t, filepath.Join(repo.dir, "apps/raw/rollout.yaml"), "registry.example/web:v1", "registry.example/web:v2")
	commit := repo.commitAndPush("Release v2")
	g.Eventually(func(g Gomega) {
		k := ks(g)
		g.Expect(k.Status.LastAttemptedRevision).To(Equal("main@sha1:" + commit))
		g.Expect(conditions.IsReady(k)).To(BeFalse())
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) bool { return conditions.IsReady(ks(g)) }, 5*time.Second, 200*time.Millisecond).Should(BeFalse())
	t.Logf("Kustomization raw while the Rollout is paused: %s", conditions.GetMessage(ks(g), meta.ReadyCondition))
}
