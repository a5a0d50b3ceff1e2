package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

var vaultManifests = webApp("vault", 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated") + `---
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: vault
spec:
  canary:
    steps:
      - setWeight: 50
      - pause: {}
`

// TestRebuildFromGit leaves a canary half-way (Git: stable v1, Deployment
// at v2), throws the control plane away and starts a new one, etcd
// included, on the same Git server: sluice brings v1 up as stable first and
// runs v2 through the strategy again, with no v2 pod before v1 is
// available.
func TestRebuildFromGit(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const v1, v2 = "registry.example/web:v1", "registry.example/web:v2"

	repo := newGitRepo(t, "vault")
	repo.write(map[string]string{"apps/vault/manifests.yaml": vaultManifests})
	repo.commitAndPush("Add the vault")
	fluxSync(t, "vault", env.Git.RepositoryURL("vault"), "./apps/vault")

	// On the first cluster: adopted, v1 recorded stable, v2 at the gate.
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "vault", Name: "web"}}
	var stableHash string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		stableHash = d.Spec.Promotion.Stable.TemplateHash
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Eventually(func() string {
		repo.git("", "pull", "--quiet", "origin", "main")
		return repo.git("", "log", "-1", "--format=%s")
	}, time.Minute, 200*time.Millisecond).Should(HavePrefix("Promote vault/web"))
	replaceInFile(t, repo.dir+"/apps/vault/manifests.yaml", v1, v2)
	repo.commitAndPush("Release web v2")
	var candidate string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		candidate = d.Status.CandidateTemplateHash
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(readFile(t, repo, "apps/vault/manifests.yaml")).To(And(
		ContainSubstring("image: "+v2), ContainSubstring("replicas: 0 # sluice:")))

	// The first cluster is gone: it applies and writes nothing more. Its
	// promotion branch goes too, so that the branch the new cluster needs
	// is its own.
	branch := fmt.Sprintf("sluice/promote/vault/web/1-%s", candidate)
	g.Eventually(func() string {
		return repo.git("", "ls-remote", "origin", "refs/heads/"+branch)
	}, time.Minute, 100*time.Millisecond).ShouldNot(BeEmpty())
	ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "vault"}})
	update(g, ks, func() { ks.Spec.Suspend = true })
	old := getObj(g, delivery.DeepCopy())
	update(g, old, func() { old.Spec.Suspend = true })
	repo.git("", "push", "--quiet", "origin", "--delete", branch)

	// A new control plane with its own etcd, on the same Git server.
	dir, err := os.MkdirTemp("", "sluice-e2e-rebuilt-")
	g.Expect(err).NotTo(HaveOccurred())
	opts := stackOptions
	opts.Dir, opts.Git, opts.Logf = dir, env.Git, t.Logf
	started := time.Now()
	rebuilt, err := stack.Start(ctx, opts)
	if err != nil {
		keepLogs(dir)
		t.Fatalf("starting the new stack: %v", err)
	}
	t.Cleanup(func() {
		rebuilt.Stop()
		if t.Failed() {
			keepLogs(dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	c, err := client.New(rebuilt.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	addReceiver(t, c)
	get := func(g Gomega, obj client.Object) {
		g.ExpectWithOffset(1, c.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	}

	v1Ready, check := stableFirst(v1, v2, replicas)
	var deploymentPods int
	watch := watchAvailabilityOn(c, "vault", func(pods []corev1.Pod) string {
		for _, p := range pods {
			if _, ok := p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; ok {
				deploymentPods++
			}
		}
		return check(pods)
	})
	fluxSyncOn(t, c, "vault", env.Git.RepositoryURL("vault"), "./apps/vault")

	// v1 first, rebuilt from the Delivery's record; then v2 through the
	// strategy, to the same gate.
	g.Eventually(func(g Gomega) {
		d := delivery.DeepCopy()
		get(g, d)
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.StableTemplateHash).To(Equal(stableHash))
		g.Expect(d.Status.CandidateTemplateHash).To(Equal(candidate))
		g.Expect(d.Status.CanaryWeight).To(HaveValue(BeEquivalentTo(50)))
	}, 3*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("new control plane started → v1 stable and v2 at the gate again in %s", time.Since(started).Round(10*time.Millisecond))
	select {
	case <-v1Ready:
	default:
		t.Fatal("v1 was never available on the new cluster")
	}

	// The user approves on the new cluster as on the old one: by merging
	// the promotion branch, which the new cluster's sluice pushed.
	g.Eventually(func() string {
		return repo.git("", "ls-remote", "origin", "refs/heads/"+branch)
	}, time.Minute, 100*time.Millisecond).ShouldNot(BeEmpty())
	repo.git("", "fetch", "--quiet", "origin", branch)
	repo.git("", "merge", "--quiet", "--no-ff", "-m", "Merge the approval of web v2", "FETCH_HEAD")
	repo.git("", "push", "--quiet", "origin", "HEAD:main")
	g.Eventually(func(g Gomega) {
		d := delivery.DeepCopy()
		get(g, d)
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	_, samples, violated := watch.finish()
	t.Logf("on the new cluster: %d samples every 100 ms, v2 pods before v1 was available: %d", samples, len(violated))
	g.Expect(violated).To(BeEmpty())
	g.Expect(deploymentPods).To(BeZero(), "the parked Deployment never ran a pod")
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "-1", "--format=%an: %s", "--author=sluice")).To(HavePrefix("sluice: Promote vault/web: template " + candidate))
}
