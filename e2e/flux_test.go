package e2e

import (
	"context"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluice-dev/sluice/e2e/stack"
)

var deploymentV1 = webApp("smoke", 2, "registry.example/web:v1")

// TestFluxAppliesDeploymentFromGit pushes a Deployment to the Git server and
// waits until Flux has applied it and its pods run Ready on the kwok node.
func TestFluxAppliesDeploymentFromGit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	repo := newGitRepo(t, "smoke")
	repo.write(map[string]string{"apps/web/deployment.yaml": deploymentV1})
	commit := repo.commitAndPush("Add web")
	fluxSync(t, "smoke", env.Git.RepositoryURL("smoke"), "./apps/web")

	g.Eventually(func(g Gomega) {
		ks := &kustomizev1.Kustomization{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "smoke"}, ks)).To(Succeed())
		g.Expect(conditions.IsReady(ks)).To(BeTrue(), "Kustomization: %s", conditions.GetMessage(ks, meta.ReadyCondition))
		g.Expect(ks.Status.LastAppliedRevision).To(Equal("main@sha1:" + commit))
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())

	g.Eventually(func(g Gomega) {
		d := &appsv1.Deployment{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "smoke", Name: "web"}, d)).To(Succeed())
		g.Expect(d.Status.AvailableReplicas).To(BeEquivalentTo(2))

		var pods corev1.PodList
		g.Expect(k8sClient.List(ctx, &pods, client.InNamespace("smoke"), client.MatchingLabels{"app": "web"})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(2))
		for _, p := range pods.Items {
			g.Expect(p.Spec.NodeName).To(Equal(stack.NodeName))
			g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning))
			g.Expect(p.Status.Conditions).To(ContainElement(And(
				HaveField("Type", corev1.PodReady), HaveField("Status", corev1.ConditionTrue))))
		}
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
}
