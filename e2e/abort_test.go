package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// editPromotion changes spec.promotion in the Delivery's file of the
// working copy, as a person (or sluice's CLI) edits it before committing.
func editPromotion(t *testing.T, path string, change func(promotion map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if doc["kind"] != deliveryv1.DeliveryKind {
		t.Fatalf("%s holds a %v, not a Delivery", path, doc["kind"])
	}
	spec, _ := doc["spec"].(map[string]any)
	promotion, _ := spec["promotion"].(map[string]any)
	if promotion == nil {
		promotion = map[string]any{}
		spec["promotion"] = promotion
	}
	change(promotion)
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// podsOf returns the names and UIDs of the namespace's pods of one
// ReplicaSet (by Argo's pod-template hash) that are not terminating.
func podsOf(g Gomega, ns, podHash string) map[string]string {
	var pods corev1.PodList
	g.Expect(k8sClient.List(context.Background(), &pods, client.InNamespace(ns),
		client.MatchingLabels{rolloutsv1.DefaultRolloutUniqueLabelKey: podHash})).To(Succeed())
	out := map[string]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = string(p.UID)
		}
	}
	return out
}

// waitForTheNextSecond waits until the second after the one in which the
// ReplicaSet of the pod-template hash podHash was created.
func waitForTheNextSecond(g Gomega, ns, podHash string) {
	var sets appsv1.ReplicaSetList
	g.Expect(k8sClient.List(context.Background(), &sets, client.InNamespace(ns),
		client.MatchingLabels{rolloutsv1.DefaultRolloutUniqueLabelKey: podHash})).To(Succeed())
	g.Expect(sets.Items).To(HaveLen(1))
	time.Sleep(time.Until(sets.Items[0].CreationTimestamp.Add(time.Second)))
}

// sluiceRejections lists the rejections sluice itself committed to main.
func sluiceRejections(repo *gitRepo, delivery string) string {
	repo.git("", "fetch", "--quiet", "origin")
	return repo.git("", "log", "origin/main", "--format=%s", "--grep=^Reject "+delivery+":")
}

// TestAbortRetryRollbackThroughGit plays what a person does from Git
// alone. A candidate waiting at its gate is rejected by a commit: the
// Rollout aborts at once, the stable pods keep serving, the Delivery is
// Rejected with the reason from Git. The rejection is removed by another
// commit: the same candidate rolls again and is approved by a merge.
// Then a revert to the template that was stable before goes back without
// stopping at the gate.
func TestAbortRetryRollbackThroughGit(t *testing.T) {
	g := NewWithT(t)
	const ns, replicas = "halt", 4
	repo := newGitRepo(t, ns)
	repo.write(map[string]string{
		"apps/halt/web.yaml":    webApp(ns, replicas, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated"),
		"apps/halt/policy.yaml": gatedPolicy(ns),
	})
	repo.commitAndPush("Add web")
	fluxSync(t, ns, env.Git.RepositoryURL(ns), "./apps/halt")
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
	stable := waitHealthy(g, ns, "web", replicas).Status.StableTemplateHash
	deliveryFile := filepath.Join(repo.dir, "apps/halt/web-delivery.yaml")

	// NOTE: Argo Rollouts tells a rollback by its ReplicaSets' creation
	// times, which count whole seconds: the rollback to v1 at the end is
	// one only when v2's ReplicaSet comes in a later second than v1's.
	waitForTheNextSecond(g, ns, getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}).Status.StableRS)

	// Release v2; it waits at the manual gate with half the traffic.
	pushWithRetry(t, repo, "Release web v2", func() {
		replaceInFile(t, filepath.Join(repo.dir, "apps/halt/web.yaml"), "web:v1", "web:v2")
	})
	var candidate, stableRS string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		candidate = d.Status.CandidateTemplateHash
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.CurrentPodHash).NotTo(Equal(r.Status.StableRS))
		g.Expect(podsOf(g, ns, r.Status.CurrentPodHash)).NotTo(BeEmpty())
		stableRS = r.Status.StableRS
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	stablePods := podsOf(g, ns, stableRS)
	g.Expect(stablePods).NotTo(BeEmpty())

	// A person rejects the candidate in Git.
	pushWithRetry(t, repo, "Reject web v2: p99 latency doubled", func() {
		editPromotion(t, deliveryFile, func(p map[string]any) {
			p["rejection"] = map[string]any{"templateHash": candidate, "reason": "p99 latency doubled"}
		})
	})
	rejected := time.Now()
	g.Eventually(func(g Gomega) {
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.Abort).To(BeTrue())
		g.Expect(r.Status.StableRS).To(Equal(stableRS))
		// Argo is back on the stable ReplicaSet: no candidate pod left,
		// every replica a stable one.
		g.Expect(podsOf(g, ns, r.Status.CurrentPodHash)).To(BeEmpty())
		g.Expect(podsOf(g, ns, stableRS)).To(HaveLen(replicas))
		g.Expect(r.Status.AvailableReplicas).To(BeEquivalentTo(replicas))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("rejection pushed → Rollout aborted, %d stable pods serving, in %s", replicas, time.Since(rejected).Round(10*time.Millisecond))
	// The stable pods that served at the gate still serve: the abort added
	// stable pods, it did not replace them.
	after := podsOf(g, ns, stableRS)
	for name, uid := range stablePods {
		g.Expect(after).To(HaveKeyWithValue(name, uid), "stable pod %s was replaced", name)
	}
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(d.Status.StableTemplateHash).To(Equal(stable))
		g.Expect(d.Status.RejectedTemplateHash).To(Equal(candidate))
		g.Expect(conditions.GetMessage(d, meta.StalledCondition)).To(Equal(fmt.Sprintf(
			"template %s rejected, the Rollout runs the stable template %s: rejected in Git (spec.promotion.rejection): p99 latency doubled",
			candidate, stable)))
		g.Expect(events(g, deliveryv1.DeliveryKind, ns, "web", deliveryv1.AbortedReason)).To(ConsistOf(ContainSubstring(
			"aborted the Rollout of template " + candidate)))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	// Git already says it: sluice commits no rejection of its own, and the
	// promotion branch of the gate goes.
	g.Eventually(func() string {
		return repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/*")
	}, time.Minute, 200*time.Millisecond).Should(BeEmpty())
	g.Expect(sluiceRejections(repo, "halt/web")).To(BeEmpty())

	// Retry: the rejection leaves Git. The same candidate rolls again and
	// waits at its gate.
	pushWithRetry(t, repo, "Retry web v2", func() {
		editPromotion(t, deliveryFile, func(p map[string]any) { delete(p, "rejection") })
	})
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Spec.Promotion.Rejection).To(BeNil())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.CandidateTemplateHash).To(Equal(candidate))
		g.Expect(d.Status.RejectedTemplateHash).To(BeEmpty())
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.Abort).To(BeFalse())
		g.Expect(podsOf(g, ns, r.Status.CurrentPodHash)).NotTo(BeEmpty())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(events(g, deliveryv1.DeliveryKind, ns, "web", deliveryv1.RetriedReason)).NotTo(BeEmpty())
	g.Expect(sluiceRejections(repo, "halt/web")).To(BeEmpty())

	// Approved by a merge, v2 becomes stable and Git records it.
	mergePromotionBranch(t, g, repo, ns, "web", time.Minute)
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// Roll back to v1, the template that was stable before: Argo's
	// rollback window lets it skip the steps, so it never waits at the gate.
	phases := watchPhases(delivery)
	pushWithRetry(t, repo, "Roll web back to v1", func() {
		replaceInFile(t, filepath.Join(repo.dir, "apps/halt/web.yaml"), "web:v2", "web:v1")
	})
	rolledBack := time.Now()
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(stable))
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.StableRS).To(Equal(stableRS))
		g.Expect(r.Status.AvailableReplicas).To(BeEquivalentTo(replicas))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	seen := phases.stop()
	t.Logf("rollback pushed → Healthy on the earlier stable template in %s; phases seen: %v", time.Since(rolledBack).Round(10*time.Millisecond), seen)
	g.Expect(seen).NotTo(ContainElement(deliveryv1.PhaseWaitingForApproval))
	g.Eventually(func(g Gomega) string {
		return getObj(g, delivery.DeepCopy()).Spec.Promotion.Stable.TemplateHash
	}, time.Minute, 100*time.Millisecond).Should(Equal(stable))
}

// phaseWatch records every phase a Delivery shows, polling every 50 ms.
type phaseWatch struct {
	stopCh chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	seen   []deliveryv1.DeliveryPhase
}

func watchPhases(delivery *deliveryv1.Delivery) *phaseWatch {
	w := &phaseWatch{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			d := &deliveryv1.Delivery{}
			if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(delivery), d); err == nil {
				w.mu.Lock()
				if n := len(w.seen); n == 0 || w.seen[n-1] != d.Status.Phase {
					w.seen = append(w.seen, d.Status.Phase)
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stopCh:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *phaseWatch) stop() []deliveryv1.DeliveryPhase {
	close(w.stopCh)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// latencyTemplate is an AnalysisTemplate whose one metric, p99, passes
// below 0.3 and fails above 0.9 at url: a value between is neither, and
// Argo counts the measurement Inconclusive.
func latencyTemplate(namespace, url string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: latency
  namespace: %s
spec:
  metrics:
    - name: p99
      count: 1
      successCondition: result < 0.3
      failureCondition: result > 0.9
      provider:
        web:
          url: %s
          jsonPath: "{$.p99}"
`, namespace, url)
}

// TestInconclusiveAnalysisWaitsForApproval releases a candidate whose
// analysis ends Inconclusive: the Delivery waits for approval with the
// measurements, sluice pushes a promotion branch, and merging it lets the
// Rollout past the analysis to Healthy.
func TestInconclusiveAnalysisWaitsForApproval(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const ns = "unsure"
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"p99": 0.5}`))
	}))
	t.Cleanup(metric.Close)

	repo := newGitRepo(t, ns)
	repo.write(map[string]string{
		"apps/unsure/web.yaml": webApp(ns, 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: analysed"),
		"apps/unsure/policy.yaml": `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: analysed
  namespace: unsure
spec:
  canary:
    steps:
      - setWeight: 50
      - analysis:
          templates:
            - name: latency
---
` + latencyTemplate(ns, metric.URL+"/p99"),
	})
	repo.commitAndPush("Add web")
	fluxSync(t, ns, env.Git.RepositoryURL(ns), "./apps/unsure")
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}
	waitHealthy(g, ns, "web", 2)

	pushWithRetry(t, repo, "Release web v2", func() {
		replaceInFile(t, filepath.Join(repo.dir, "apps/unsure/web.yaml"), "web:v1", "web:v2")
	})
	var candidate string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.CurrentStep).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(conditions.GetReason(d, meta.ReconcilingCondition)).To(Equal(deliveryv1.WaitingForApprovalReason))
		msg := conditions.GetMessage(d, meta.ReconcilingCondition)
		g.Expect(msg).To(MatchRegexp(`waits for approval at step 1: AnalysisRun web-[0-9a-z]+-[0-9]+-1 was inconclusive: metric p99 Inconclusive \(measured 0.5\)`))
		candidate = d.Status.CandidateTemplateHash
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.PauseConditions).To(ContainElement(HaveField("Reason", rolloutsv1.PauseReasonInconclusiveAnalysis)))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// The promotion branch says what the analysis found.
	var branch string
	g.Eventually(func() string {
		branch = repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/unsure/web/*")
		return branch
	}, time.Minute, 100*time.Millisecond).Should(ContainSubstring("sluice/promote/unsure/web/1-" + candidate))
	repo.git("", "fetch", "--quiet", "origin", strings.Fields(branch)[1])
	g.Expect(repo.git("", "log", "-1", "--format=%B", "FETCH_HEAD")).To(MatchRegexp(`Analysis so far: web-[0-9a-z]+-[0-9]+-1 Inconclusive \(p99 Inconclusive\)`))

	mergePromotionBranch(t, g, repo, ns, "web", time.Minute)
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	// Past the analysis, not through it again: one run for the candidate.
	r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
	var runs rolloutsv1.AnalysisRunList
	g.Expect(k8sClient.List(ctx, &runs, client.InNamespace(ns),
		client.MatchingLabels{rolloutsv1.DefaultRolloutUniqueLabelKey: r.Status.StableRS})).To(Succeed())
	g.Expect(runs.Items).To(HaveLen(1))
	g.Expect(runs.Items[0].Status.Phase).To(Equal(rolloutsv1.AnalysisPhaseInconclusive))
}
