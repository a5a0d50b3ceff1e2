package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

var storeDeployment = webApp("store", 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated")

// storePolicy is the store's gated policy and its analysis, which asks
// metricURL for the success rate.
func storePolicy(metricURL string) string {
	return storeGatedPolicy + "---\n" + successRateTemplate("store", "success-rate", metricURL+"/success-rate")
}

const storeGatedPolicy = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: store
spec:
  canary:
    steps:
      - setWeight: 50
      - analysis:
          templates:
            - name: success-rate
      - pause: {} # approved by merging sluice's promotion branch
  git:
    rollback: revert
`

// successRateTemplate is an AnalysisTemplate named name in namespace whose
// one metric, success-rate, must be at least 0.99 at url.
func successRateTemplate(namespace, name, url string) string {
	return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: %s
  namespace: %s
spec:
  metrics:
    - name: success-rate
      count: 1
      failureLimit: 0
      successCondition: result >= 0.99
      provider:
        web:
          url: %s
          jsonPath: "{$.successRate}"
`, name, namespace, url)
}

// TestPromotionThroughGit plays a release approved by merging sluice's
// promotion branch, then a release whose analysis fails and is rejected and
// reverted in Git, driven only by git push.
func TestPromotionThroughGit(t *testing.T) {
	g := NewWithT(t)

	var failing atomic.Bool
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rate := "1.0"
		if failing.Load() {
			rate = "0.42"
		}
		fmt.Fprintf(w, `{"successRate": %s}`, rate)
	}))
	t.Cleanup(metric.Close)

	repo := newGitRepo(t, "store")
	repo.write(map[string]string{
		"apps/store/deployment.yaml": storeDeployment,
		// The adoption's message comes from the policy.
		"apps/store/policy.yaml": strings.Replace(storePolicy(metric.URL), "    rollback: revert\n",
			"    rollback: revert\n    commit:\n      messageTemplates:\n        adoption: \"Adopt {{.Deployment.Name}} for {{.Strategy}} delivery, as the store team asked\"\n", 1),
	})
	repo.commitAndPush("Add the store")
	fluxSync(t, "store", env.Git.RepositoryURL("store"), "./apps/store")

	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "web"}}
	// Adoption, then the first stable template recorded in Git.
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
		g.Expect(d.Spec.Promotion.Stable.Images).To(ConsistOf(deliveryv1.ContainerImage{Name: "web", Image: "registry.example/web:v1"}))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s")).To(HavePrefix("Promote store/web: template"))
	// The adoption's message is the policy's template, with the trailers.
	g.Expect(repo.git("", "log", "--format=%B", "--grep=Sluice-Action: adopt")).To(MatchRegexp(
		`^Adopt web for canary delivery, as the store team asked\n\nSluice-Delivery: store/web\nSluice-Action: adopt\nSluice-Template-Hash: [0-9a-f]{10}$`))

	// Release v2: the canary passes analysis and waits at the gate; sluice
	// pushes a promotion branch.
	setImage(t, repo, "registry.example/web:v1", "registry.example/web:v2")
	repo.commitAndPush("Release web v2")
	var waiting time.Time
	var candidate string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		candidate = d.Status.CandidateTemplateHash
	}, 2*time.Minute, 50*time.Millisecond).Should(Succeed())
	waiting = time.Now()
	branch := fmt.Sprintf("sluice/promote/store/web/2-%s", candidate)
	g.Eventually(func(g Gomega) string {
		return repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/*")
	}, time.Minute, 50*time.Millisecond).Should(ContainSubstring("refs/heads/" + branch))
	t.Logf("gate reached → promotion branch pushed in about %s", time.Since(waiting).Round(10*time.Millisecond))
	// The status records the branch once the push is done.
	g.Eventually(func(g Gomega) string {
		return getObj(g, delivery.DeepCopy()).Status.PendingPromotionBranch
	}, 10*time.Second, 50*time.Millisecond).Should(Equal(branch))

	repo.git("", "fetch", "--quiet", "origin", branch)
	approval := repo.git("", "log", "-1", "--format=%B", "FETCH_HEAD")
	g.Expect(approval).To(HavePrefix(fmt.Sprintf("Approve store/web: template %s at step 2", candidate)))
	g.Expect(approval).To(ContainSubstring("Images: web=registry.example/web:v2"))
	g.Expect(approval).To(MatchRegexp(`Analysis so far: web-[0-9a-z]+-2-1 Successful \(success-rate Successful\)`))
	g.Expect(approval).To(ContainSubstring("Sluice-Action: approve\nSluice-Template-Hash: " + candidate + "\nSluice-Step: 2"))

	// The approval is the merge. Meanwhile another writer keeps pushing to
	// main, so sluice's promotion commit meets a branch that moves.
	repo.git("", "merge", "--quiet", "--no-ff", "-m", "Merge the approval of web v2", "FETCH_HEAD")
	merged := time.Now()
	repo.git("", "push", "--quiet", "origin", "HEAD:main")
	other := startNoisyWriter(t, "store")
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(candidate))
	}, 2*time.Minute, 50*time.Millisecond).Should(Succeed())
	t.Logf("merge pushed → promoted and recorded in Git in %s", time.Since(merged).Round(10*time.Millisecond))
	theirs := other.stop()
	g.Expect(theirs).NotTo(BeEmpty())
	repo.git("", "pull", "--quiet", "origin", "main")
	for _, c := range theirs {
		repo.git("", "merge-base", "--is-ancestor", c, "HEAD")
	}
	g.Expect(repo.git("", "log", "--format=%s", "--author=sluice", "-1")).To(HavePrefix("Promote store/web: template " + candidate))
	t.Logf("%d commits of another writer and sluice's promotion all reached main", len(theirs))
	g.Eventually(func(g Gomega) string {
		return repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/*")
	}, time.Minute, 100*time.Millisecond).Should(BeEmpty())

	// Release v3 fails its analysis: sluice records the rejection and, with
	// rollback: revert, puts v2 back in Git.
	failing.Store(true)
	repo.git("", "pull", "--quiet", "origin", "main")
	setImage(t, repo, "registry.example/web:v2", "registry.example/web:v3")
	repo.commitAndPush("Release web v3")
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Spec.Promotion.Rejection).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Rejection.Reason).To(ContainSubstring("metric success-rate failed"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s", "-1")).To(HavePrefix("Reject store/web: template"))
	deployment, err := os.ReadFile(filepath.Join(repo.dir, "apps/store/deployment.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(deployment)).To(ContainSubstring("image: registry.example/web:v2"))

	// Git describes what runs again: v2, stable and Ready.
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(candidate))
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "store"}})
		g.Expect(conditions.IsReady(ks)).To(BeTrue())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("history:\n%s", repo.git("", "log", "--format=%h %an: %s"))
}

// setImage replaces an image in the store's Deployment.
func setImage(t *testing.T, repo *gitRepo, from, to string) {
	t.Helper()
	replaceInFile(t, filepath.Join(repo.dir, "apps/store/deployment.yaml"), from, to)
}

// noisyWriter pushes a commit to main every 100 ms from its own clone, as
// another person or bot would, pulling and retrying when its push is
// refused.
type noisyWriter struct {
	stopCh  chan struct{}
	done    chan struct{}
	commits []string
}

func startNoisyWriter(t *testing.T, name string) *noisyWriter {
	clone := newGitRepoClone(t, name)
	w := &noisyWriter{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stopCh:
				return
			case <-time.After(100 * time.Millisecond):
			}
			path := filepath.Join(clone.dir, "notes", fmt.Sprintf("%d.txt", i))
			_ = os.MkdirAll(filepath.Dir(path), 0o755)
			_ = os.WriteFile(path, []byte("note\n"), 0o644)
			if _, err := clone.try("add", "-A"); err != nil {
				continue
			}
			if _, err := clone.try("commit", "--quiet", "-m", fmt.Sprintf("Note %d", i)); err != nil {
				continue
			}
			for attempt := 0; attempt < 10; attempt++ {
				if _, err := clone.try("push", "--quiet", "origin", "HEAD:main"); err == nil {
					break
				}
				_, _ = clone.try("pull", "--quiet", "--rebase", "origin", "main")
			}
			if head, err := clone.try("rev-parse", "HEAD"); err == nil {
				w.commits = append(w.commits, head)
			}
		}
	}()
	return w
}

// stop stops writing and returns the commits the writer made, rebased
// commits by their final id.
func (w *noisyWriter) stop() []string {
	close(w.stopCh)
	<-w.done
	return w.commits
}
