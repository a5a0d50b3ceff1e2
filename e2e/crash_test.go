package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// crashKills is how many times the crash scenario kills sluice.
const crashKills = 30

const crashPolicies = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: crash
spec:
  canary:
    steps:
      - setWeight: 50
      - pause: {} # approved by merging sluice's promotion branch
---
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: failing
  namespace: crash
spec:
  canary:
    steps:
      - setWeight: 50
      - analysis:
          templates:
            - name: failing-rate
`

// TestCrashSafety kills sluice with SIGKILL at random moments, 30 times,
// restarting it each time, while five apps are adopted, promoted, approved
// by merging promotion branches and rejected. Afterwards every commit sluice
// intended is in Git exactly once, no branch of anyone else's is lost, and
// every app converged.
func TestCrashSafety(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"successRate": 0.42}`)
	}))
	t.Cleanup(metric.Close)

	gated, failing := []string{"alpha", "bravo", "charlie"}, []string{"delta", "echo"}
	files := map[string]string{
		"apps/crash/namespace.yaml": namespace("crash"),
		"apps/crash/policies.yaml":  crashPolicies + "---\n" + successRateTemplate("crash", "failing-rate", metric.URL),
	}
	for _, app := range append(append([]string{}, gated...), failing...) {
		policy := "gated"
		if strings.Contains(strings.Join(failing, ","), app) {
			policy = "failing"
		}
		files["apps/crash/"+app+".yaml"] = deployment(app, "crash", "2", "registry.example/"+app+":v1",
			"sluice.dev/strategy: canary", "sluice.dev/policy: "+policy)
	}
	repo := newGitRepo(t, "crash")
	repo.write(files)
	repo.commitAndPush("Add five apps")
	repo.git("", "push", "--quiet", "origin", "HEAD:refs/heads/people/keep-me")
	fluxSyncCustom(t, "crash", "./apps/crash", nil)

	// The killer: SIGKILL at a random moment, start again, 30 times.
	var killed atomic.Int32
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for killed.Load() < crashKills {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+rand.IntN(1300)) * time.Millisecond):
			}
			env.StopSluice(true)
			killed.Add(1)
			if err := env.StartSluice(ctx); err != nil {
				t.Errorf("starting sluice after kill %d: %v", killed.Load(), err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-stopped
		if !env.SluiceRunning() {
			if err := env.StartSluice(context.Background()); err != nil {
				t.Errorf("starting sluice: %v", err)
			}
		}
	})

	delivery := func(g Gomega, name string) *deliveryv1.Delivery {
		return getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "crash", Name: name}})
	}
	stable := func(g Gomega, name string) string {
		d := delivery(g, name)
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
		return d.Status.StableTemplateHash
	}
	first := map[string]string{}
	g.Eventually(func(g Gomega) {
		for _, app := range append(append([]string{}, gated...), failing...) {
			first[app] = stable(g, app)
		}
	}, 4*time.Minute, 200*time.Millisecond).Should(Succeed())

	// Release v2 of all five in one commit.
	pushWithRetry(t, repo, "Release v2 of every app", func() {
		for _, app := range append(append([]string{}, gated...), failing...) {
			replaceInFile(t, filepath.Join(repo.dir, "apps/crash/"+app+".yaml"), app+":v1", app+":v2")
		}
	})

	// The gated apps wait at their gates: merge each promotion branch as it
	// appears, as a reviewer would.
	merged := map[string]bool{}
	g.Eventually(func(g Gomega) {
		for _, app := range gated {
			if merged[app] {
				continue
			}
			heads := repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/crash/"+app+"/*")
			g.Expect(heads).NotTo(BeEmpty(), "no promotion branch for %s yet", app)
			approval := strings.Fields(heads)[0]
			repo.git("", "fetch", "--quiet", "origin", strings.Fields(heads)[1])
			pushWithRetry(t, repo, "", func() {
				repo.git("", "merge", "--quiet", "--no-ff", "-m", "Approve "+app+" v2", approval)
			})
			merged[app] = true
		}
	}, 4*time.Minute, 500*time.Millisecond).Should(Succeed())

	converged := func(g Gomega) {
		for _, app := range gated {
			g.Expect(stable(g, app)).NotTo(Equal(first[app]), "%s is not promoted to v2", app)
		}
		for _, app := range failing {
			d := delivery(g, app)
			g.Expect(d.Spec.Promotion.Rejection).NotTo(BeNil(), "%s's rejection is not recorded", app)
			g.Expect(d.Spec.Promotion.Rejection.TemplateHash).To(Equal(d.Status.CandidateTemplateHash))
		}
		g.Expect(repo.git("", "ls-remote", "origin", "refs/heads/sluice/*")).To(BeEmpty(), "promotion branches are left")
	}
	g.Eventually(converged, 4*time.Minute, 500*time.Millisecond).Should(Succeed())
	select {
	case <-stopped:
	case <-time.After(3 * time.Minute):
		t.Fatal("the killer did not finish")
	}
	g.Expect(killed.Load()).To(BeEquivalentTo(crashKills))
	// Still converged with sluice running after the last kill.
	g.Eventually(converged, 2*time.Minute, 500*time.Millisecond).Should(Succeed())

	// Every commit sluice intended is in Git exactly once; a commit that
	// records several changes counts for each.
	seen := sluiceIntents(repo)
	for intent, n := range seen {
		g.Expect(n).To(Equal(1), "sluice committed %q %d times", intent, n)
	}
	count := func(app, action string) int {
		n := 0
		for intent := range seen {
			if strings.HasPrefix(intent, "crash/"+app+" "+action+" ") || intent == "crash/"+app+" "+action {
				n++
			}
		}
		return n
	}
	for _, app := range gated {
		g.Expect(count(app, "adopt")).To(Equal(1), app)
		g.Expect(count(app, "promote")).To(Equal(2), app)
		g.Expect(count(app, "approve")).To(Equal(1), app)
	}
	for _, app := range failing {
		g.Expect(count(app, "adopt")).To(Equal(1), app)
		g.Expect(count(app, "promote")).To(Equal(1), app)
		g.Expect(count(app, "reject")).To(Equal(1), app)
	}
	// No one else's branch is lost.
	g.Expect(repo.git("", "ls-remote", "--heads", "origin")).To(And(
		ContainSubstring("refs/heads/main"), ContainSubstring("refs/heads/people/keep-me")))
	t.Logf("sluice killed %d times; %d distinct commits of sluice's, each once", killed.Load(), len(seen))
}

// pushWithRetry makes a change with change (a merge, or edits committed
// with message) on the latest main and pushes it, pulling again when sluice
// pushed first.
func pushWithRetry(t *testing.T, repo *gitRepo, message string, change func()) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		repo.git("", "fetch", "--quiet", "origin")
		repo.git("", "reset", "--quiet", "--hard", "origin/main")
		change()
		if message != "" {
			repo.git("", "add", "-A")
			repo.git("", "commit", "--quiet", "-m", message)
		}
		if _, err := repo.try("push", "--quiet", "origin", "HEAD:main"); err == nil {
			return
		} else if attempt == 20 {
			t.Fatalf("pushing to main: %v", err)
		}
	}
}

// trailerBlock is the trailers of one change a sluice commit records; a
// commit that records several changes holds one block for each.
var trailerBlock = regexp.MustCompile(`(?m)^Sluice-Delivery: (\S+)\nSluice-Action: (\S+)(?:\nSluice-Template-Hash: (\S+))?(?:\nSluice-Step: (\S+))?$`)

// sluiceIntents counts the commits of sluice's, on every branch of the
// repository, that record each change sluice intended: "<delivery>
// <action> [<template hash> [<step>]]".
func sluiceIntents(repo *gitRepo) map[string]int {
	repo.git("", "fetch", "--quiet", "--prune", "origin")
	log := repo.git("", "log", "--remotes=origin", "--author=sluice", "--format=%B%x00")
	intents := map[string]int{}
	for _, message := range strings.Split(log, "\x00") {
		for _, m := range trailerBlock.FindAllStringSubmatch(message, -1) {
			intents[strings.TrimSpace(strings.Join(m[1:], " "))]++
		}
	}
	return intents
}
