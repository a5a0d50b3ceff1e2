package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// sluiceCLI runs the sluice command built from this tree against the
// suite's stack, as a person at a terminal would.
type sluiceCLI struct {
	t   *testing.T
	bin string
	// common are the flags every run gets: the stack's kubeconfig and the
	// app's namespace.
	common []string
}

func buildCLI(t *testing.T, namespace string) *sluiceCLI {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the sluice command: %v\n%s", err, out)
	}
	return &sluiceCLI{t: t, bin: bin, common: []string{"--kubeconfig", env.Kubeconfig, "-n", namespace}}
}

// run runs the command to its end and returns its output, stdout then
// stderr, and its exit code.
func (c *sluiceCLI) run(args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append(args, c.common...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		c.t.Fatalf("running sluice %s: %v", strings.Join(args, " "), err)
	}
	out := stdout.String() + stderr.String()
	shown := strings.Join(args, " ")
	for _, secret := range []string{env.Git.Password, env.Git.ReadOnlyPassword} {
		if secret != "" {
			shown = strings.ReplaceAll(shown, secret, "***")
		}
	}
	c.t.Logf("$ sluice %s   # exit %d after %s\n%s", shown, code, time.Since(start).Round(10*time.Millisecond), out)
	return out, code
}

// ok runs the command and fails the test unless it exits 0.
func (c *sluiceCLI) ok(args ...string) string {
	c.t.Helper()
	out, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("sluice %s exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// running is a command left running, its output read from a pipe.
type running struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

func (c *sluiceCLI) start(args ...string) *running {
	c.t.Helper()
	cmd := exec.Command(c.bin, append(args, c.common...)...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	r := &running{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		reader := bufio.NewReader(pipe)
		buf := make([]byte, 4096)
		for {
			n, err := reader.Read(buf)
			r.mu.Lock()
			r.out.Write(buf[:n])
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	c.t.Cleanup(func() { _ = cmd.Process.Kill(); <-r.done; _ = cmd.Wait() })
	return r
}

func (r *running) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// stop interrupts the command, as Ctrl-C does, and returns all it printed.
func (r *running) stop(g *WithT) string {
	g.Expect(r.cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		g.Expect(errors.New("still running 10s after an interrupt")).NotTo(HaveOccurred())
	}
	g.Expect(r.cmd.Wait()).To(Succeed(), "an interrupted watch exits 0")
	return r.output()
}

const cliGatedPolicy = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: cli
spec:
  canary:
    steps:
      - setWeight: 50
      - analysis:
          templates:
            - name: success-rate
      - pause: {} # approved with sluice approve
`

// TestCLI drives a release only through the sluice command: get, tree and
// their watch views, status for CI, approve as the user's Git identity,
// history, abort with revert, retry, rollback, suspend, resume and
// reconcile, on the real stack.
func TestCLI(t *testing.T) {
	g := NewWithT(t)
	var failing atomic.Bool
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			fmt.Fprint(w, `{"successRate": 0.42}`)
			return
		}
		fmt.Fprint(w, `{"successRate": 0.998}`)
	}))
	t.Cleanup(metric.Close)
	cli := buildCLI(t, "cli")

	repo := newGitRepo(t, "cli")
	repo.write(map[string]string{
		"apps/cli/deployment.yaml": webApp("cli", 2, "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated"),
		"apps/cli/policy.yaml":     cliGatedPolicy + "---\n" + successRateTemplate("cli", "success-rate", metric.URL+"/success-rate"),
	})
	repo.commitAndPush("Add the web app")
	fluxSync(t, "cli", env.Git.RepositoryURL("cli"), "./apps/cli")
	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "cli", Name: "web"}}
	var v1 string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(d.Status.StableTemplateHash))
		v1 = d.Status.StableTemplateHash
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// get, in the namespace and across all, and as a kubectl plugin.
	out := cli.ok("get")
	g.Expect(out).To(MatchRegexp(`(?m)^NAME\s+PHASE\s+STEP\s+WEIGHT\s+STABLE\s+CANDIDATE\s+SUSPENDED\s+READY\s+MESSAGE\s+PROMOTION BRANCH$`))
	g.Expect(out).To(MatchRegexp(`(?m)^web\s+Healthy\s+\S+\s+\S+\s+` + v1 + `\s+-\s+false\s+True\s+`))
	g.Expect(cli.ok("get", "-A")).To(MatchRegexp(`(?m)^cli\s+web\s+Healthy\s+`))
	plugins := t.TempDir()
	g.Expect(os.Symlink(cli.bin, filepath.Join(plugins, "kubectl-sluice"))).To(Succeed())
	kubectl := exec.Command(filepath.Join(stackOptions.BinDir, "kubectl"), append([]string{"sluice", "get"}, cli.common...)...)
	kubectl.Env = append(os.Environ(), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
	plugin, err := kubectl.CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), string(plugin))
	g.Expect(string(plugin)).To(MatchRegexp(`(?m)^web\s+Healthy\s+`))
	g.Expect(cli.ok("status", "web", "--timeout", "30s")).To(ContainSubstring("✔ Delivery cli/web is healthy: template " + v1 + " is stable"))

	// The user's clone, with their identity.
	clone := newGitRepoClone(t, "cli")
	clone.git("", "config", "user.name", "Ada Approver")
	clone.git("", "config", "user.email", "ada@example.com")

	// The watch views, left running through the release.
	getWatch := cli.start("get", "-w", "--timeout", "15m")
	treeWatch := cli.start("tree", "web", "-w", "--timeout", "15m")
	g.Eventually(treeWatch.output, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring("ReplicaSet"))

	// Release v2: it waits at the gate.
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/cli/deployment.yaml"), "registry.example/web:v1", "registry.example/web:v2")
	repo.commitAndPush("Release web v2")
	var v2, branch string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.PendingPromotionBranch).NotTo(BeEmpty())
		v2, branch = d.Status.CandidateTemplateHash, d.Status.PendingPromotionBranch
	}, 3*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(branch).To(Equal("sluice/promote/cli/web/2-" + v2))

	// A CI job waiting for the release times out, and says why.
	out, code := cli.run("status", "web", "--timeout", "3s")
	g.Expect(code).To(Equal(2))
	g.Expect(out).To(ContainSubstring("not healthy after 3s: WaitingForApproval, waiting for the merge of " + branch + " (sluice approve web)"))

	// The watch views saw it.
	g.Eventually(getWatch.output, 30*time.Second, 100*time.Millisecond).Should(MatchRegexp(`(?m)^web\s+WaitingForApproval\s+2\s+50\s+` + v1 + `\s+` + v2 + `\s+false\s+`))
	g.Eventually(treeWatch.output, 30*time.Second, 100*time.Millisecond).Should(And(
		ContainSubstring("canary, revision 2, template "+v2+", registry.example/web:v2"), MatchRegexp(`success-rate\s+Metric\s+Successful\s+\[0\.998\]`)))

	// tree, with the commit that brought the candidate in from the clone.
	clone.git("", "fetch", "--quiet", "origin")
	out = cli.ok("tree", "web", "--repo", clone.dir)
	for _, line := range []string{
		`^web\s+Delivery\s+॥ WaitingForApproval\s+step 2, weight 50, stable ` + v1 + `, candidate ` + v2 + `, merge ` + regexp.QuoteMeta(branch) + ` to approve`,
		`^├──flux-system/cli\s+Kustomization\s+\S+ Ready=\S+\s+(applied|applying) main@sha1:[0-9a-f]{40}`,
		`^│  └──flux-system/cli\s+GitRepository\s+✔ Ready=True\s+fetched main@sha1:[0-9a-f]{40}`,
		`^│     └──[0-9a-f]{10}\s+Commit\s+A User\s+introduced the candidate: "Release web v2"`,
		`^└──web\s+Rollout\s+॥ Paused\s+step 2/3, `,
		`^   ├──web-[0-9a-z]+\s+ReplicaSet\s+✔ Healthy\s+canary, revision 2, template ` + v2 + `, registry.example/web:v2`,
		`^   │  └──web-[0-9a-z]+-[0-9a-z]+\s+Pod\s+✔ Running\s+ready 1/1`,
		`^   ├──web-[0-9a-z]+\s+ReplicaSet\s+✔ Healthy\s+stable, revision 1, template ` + v1 + `, registry.example/web:v1`,
		`^   └──web-[0-9a-z]+-2-1\s+AnalysisRun\s+✔ Successful`,
		`^      └──success-rate\s+Metric\s+Successful\s+\[0\.998\] ✔ 1`,
	} {
		g.Expect(out).To(MatchRegexp(`(?m)`+line), line)
	}

	// Someone else pushes to main meanwhile: the approval is a true merge.
	repo.git("", "pull", "--quiet", "origin", "main")
	repo.write(map[string]string{"README.md": "The web app.\n"})
	repo.commitAndPush("Say what the repository holds")

	// Credentials that may not push stand for a protected branch: approve
	// pushes nothing, says where to merge, and exits 3. Without --repo it
	// writes to the GitRepository's URL.
	out, code = cli.run("approve", "web", "--git-username", env.Git.ReadOnlyUsername, "--git-password", env.Git.ReadOnlyPassword,
		"--author-name", "Ada Approver", "--author-email", "ada@example.com")
	g.Expect(code).To(Equal(3))
	g.Expect(out).To(ContainSubstring("✗ push refused"))
	g.Expect(out).To(ContainSubstring("the branch may be protected: merge " + branch + " into it with a pull request"))
	g.Expect(out).NotTo(ContainSubstring(env.Git.ReadOnlyPassword))
	g.Expect(repo.git("", "ls-remote", "origin", "refs/heads/main")).To(HavePrefix(repo.git("", "rev-parse", "HEAD")))

	// approve merges the promotion branch as Ada and follows the canary.
	out = cli.ok("approve", "web", "--repo", clone.dir, "--timeout", "3m")
	g.Expect(out).To(MatchRegexp(`✔ pushed [0-9a-f]{12} to branch main of http://\S+ as Ada Approver <ada@example.com>`))
	g.Expect(out).To(ContainSubstring("✔ Delivery cli/web is healthy: template " + v2 + " is stable"))
	g.Expect(out).NotTo(ContainSubstring(env.Git.Password))
	merge := clone.git("", "log", "-1", "--format=%an <%ae>%n%P%n%B", "--merges", "origin/main")
	g.Expect(merge).To(HavePrefix("Ada Approver <ada@example.com>\n"))
	g.Expect(strings.Fields(strings.Split(merge, "\n")[1])).To(HaveLen(2))
	g.Expect(merge).To(ContainSubstring("Merge " + branch + ": approve cli/web at step 2"))
	g.Expect(merge).To(HaveSuffix(fmt.Sprintf("Sluice-Delivery: cli/web\nSluice-Action: approve\nSluice-Template-Hash: %s\nSluice-Step: 2", v2)))
	g.Expect(cli.ok("status", "web", "--timeout", "1m")).To(ContainSubstring("is healthy: template " + v2))
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Spec.Promotion.Stable.TemplateHash).To(Equal(v2))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	// history: who did what.
	out = cli.ok("history", "web", "--repo", clone.dir)
	g.Expect(out).To(MatchRegexp(`(?m)^TIME\s+ACTION\s+TEMPLATE\s+STEP\s+AUTHOR\s+COMMIT\s+MESSAGE$`))
	g.Expect(out).To(MatchRegexp(`(?m)^\S+\s+promote\s+` + v2 + `\s+-\s+sluice <sluice@sluice.dev>\s+[0-9a-f]{10}\s+Promote cli/web: template ` + v2 + ` is stable`))
	g.Expect(out).To(MatchRegexp(`(?m)^\S+\s+approve\s+` + v2 + `\s+2\s+Ada Approver <ada@example.com>\s+[0-9a-f]{10}\s+Merge ` + regexp.QuoteMeta(branch) + `: approve cli/web at step 2 — Analysis so far: web-[0-9a-z]+-2-1 Successful \(success-rate Successful\)`))
	g.Expect(out).To(MatchRegexp(`(?m)^\S+\s+promote\s+` + v1 + `\s+-\s+sluice <sluice@sluice.dev>\s+`))
	g.Expect(out).To(MatchRegexp(`(?m)^\S+\s+adopt\s+` + v1 + `\s+-\s+sluice <sluice@sluice.dev>\s+[0-9a-f]{10}\s+Adopt Deployment cli/web for canary delivery$`))

	// Release v3, aborted at its gate with a revert: one commit of Ada's
	// records the rejection and puts v2 back.
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/cli/deployment.yaml"), "registry.example/web:v2", "registry.example/web:v3")
	repo.commitAndPush("Release web v3")
	var v3 string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		v3 = d.Status.CandidateTemplateHash
		g.Expect(v3).NotTo(Equal(v2))
	}, 3*time.Minute, 100*time.Millisecond).Should(Succeed())
	_, code = cli.run("abort", "web", "--repo", clone.dir)
	g.Expect(code).To(Equal(1), "abort without a reason")
	out = cli.ok("abort", "web", "--reason", "v3 leaks memory", "--revert", "--repo", clone.dir)
	g.Expect(out).To(ContainSubstring("as Ada Approver <ada@example.com>"))
	clone.git("", "merge", "--quiet", "--ff-only", "origin/main")
	g.Expect(clone.git("", "log", "-1", "--format=%an%n%B")).To(And(
		HavePrefix("Ada Approver\nReject cli/web: template "+v3+"\n\nAda Approver aborts the release: v3 leaks memory"),
		HaveSuffix("Sluice-Delivery: cli/web\nSluice-Action: reject\nSluice-Template-Hash: "+v3)))
	g.Expect(clone.git("", "show", "HEAD:apps/cli/deployment.yaml")).To(ContainSubstring("image: registry.example/web:v2"))
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Spec.Promotion.Rejection).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Rejection.TemplateHash).To(Equal(v3))
		g.Expect(d.Spec.Promotion.Rejection.Reason).To(Equal("aborted by Ada Approver: v3 leaks memory"))
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(v2))
		g.Expect(d.Status.CandidateTemplateHash).To(BeEmpty())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(cli.ok("history", "web", "--repo", clone.dir)).To(MatchRegexp(`(?m)^\S+\s+reject\s+` + v3 + `\s+-\s+Ada Approver <ada@example.com>\s+[0-9a-f]{10}\s+Reject cli/web: template ` + v3 + ` — Ada Approver aborts the release: v3 leaks memory`))

	// retry removes the rejection.
	out = cli.ok("retry", "web", "--repo", clone.dir)
	g.Expect(out).To(ContainSubstring("✔ pushed"))
	clone.git("", "merge", "--quiet", "--ff-only", "origin/main")
	g.Expect(clone.git("", "log", "-1", "--format=%B")).To(HaveSuffix("Sluice-Action: retry\nSluice-Template-Hash: " + v3))
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Spec.Promotion.Rejection).To(BeNil())
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	_, code = cli.run("retry", "web", "--repo", clone.dir)
	g.Expect(code).To(Equal(1), "nothing to retry")

	// rollback --to v1's stable record: v1's images go back in the
	// Deployment; within the policy's rollback window Argo skips the
	// steps, and v1 is stable again.
	out = cli.ok("rollback", "web", "--to", v1, "--repo", clone.dir)
	g.Expect(out).To(ContainSubstring("✔ pushed"))
	clone.git("", "merge", "--quiet", "--ff-only", "origin/main")
	g.Expect(clone.git("", "show", "HEAD:apps/cli/deployment.yaml")).To(ContainSubstring("image: registry.example/web:v1"))
	g.Expect(clone.git("", "log", "-1", "--format=%an%n%B")).To(And(
		HavePrefix("Ada Approver\nRoll back cli/web to template "+v1),
		HaveSuffix("Sluice-Action: rollback\nSluice-Template-Hash: "+v1)))
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Status.StableTemplateHash).To(Equal(v1))
		g.Expect(d.Spec.Promotion.Stable.TemplateHash).To(Equal(v1))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	// rollback without --to: the recorded stable template, v1, runs
	// already.
	g.Expect(cli.ok("rollback", "web", "--repo", clone.dir)).To(ContainSubstring("says it already: nothing to commit"))
	// rollback --to v2's template hash: v2 again; its steps are skipped
	// while v2 is in the rollback window, else its gate is approved.
	cli.ok("rollback", "web", "--to", v2, "--repo", clone.dir)
	var phase deliveryv1.DeliveryPhase
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		phase = d.Status.Phase
		g.Expect([]bool{
			phase == deliveryv1.PhaseHealthy && d.Status.StableTemplateHash == v2,
			phase == deliveryv1.PhaseWaitingForApproval && d.Status.CandidateTemplateHash == v2 && d.Status.PendingPromotionBranch != "",
		}).To(ContainElement(true))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	if phase == deliveryv1.PhaseWaitingForApproval {
		cli.ok("approve", "web", "--repo", clone.dir)
	}
	g.Expect(cli.ok("status", "web", "--timeout", "2m")).To(ContainSubstring("is healthy: template " + v2))
	// sluice's record of v2 as stable is in, so the pushes below start
	// from it and the commit found below is that record.
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Spec.Promotion.Stable.TemplateHash).To(Equal(v2))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	// --to a commit at which Git records v2 as stable: the Deployment runs
	// it already.
	clone.git("", "fetch", "--quiet", "origin")
	promoted := clone.git("", "log", "-1", "--format=%H", "--all-match", "--grep=Sluice-Action: promote", "--grep=Sluice-Template-Hash: "+v2, "origin/main")
	g.Expect(cli.ok("rollback", "web", "--to", "main@sha1:"+promoted, "--repo", clone.dir)).To(ContainSubstring("says it already: nothing to commit"))

	// suspend and resume are commits too; get shows them once Flux applied
	// them.
	out = cli.ok("suspend", "web", "--repo", clone.dir)
	g.Expect(out).To(ContainSubstring("► applied revision main@sha1:"))
	g.Eventually(func() string { out, _ := cli.run("get", "web"); return out }, time.Minute, time.Second).Should(MatchRegexp(`(?m)^web\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+true\s+`))
	clone.git("", "merge", "--quiet", "--ff-only", "origin/main")
	g.Expect(clone.git("", "log", "-1", "--format=%B")).To(HaveSuffix("Sluice-Action: suspend"))
	cli.ok("resume", "web", "--repo", clone.dir)
	g.Eventually(func() string { out, _ := cli.run("get", "web"); return out }, time.Minute, time.Second).Should(MatchRegexp(`(?m)^web\s+Healthy\s+\S+\s+\S+\s+\S+\s+\S+\s+false\s+True\s+`))

	// Everything Ada did is in the history.
	out = cli.ok("history", "web", "--repo", clone.dir)
	for _, action := range []string{"resume", "suspend", "rollback", "retry", "reject", "approve"} {
		g.Expect(out).To(MatchRegexp(`(?m)^\S+\s+`+action+`\s+.*Ada Approver <ada@example.com>`), action)
	}

	// reconcile, as flux reconcile does.
	out = cli.ok("reconcile", "web", "--with-source")
	g.Expect(out).To(MatchRegexp(`► fetched revision main@sha1:[0-9a-f]{40}`))
	g.Expect(out).To(ContainSubstring("✔ Delivery cli/web reconciled: Healthy"))
	d := getObj(g, delivery.DeepCopy())
	g.Expect(d.Status.LastHandledReconcileAt).To(Equal(d.Annotations["reconcile.fluxcd.io/requestedAt"]))

	// Release v5, aborted at its gate without a revert: the Rollout aborts
	// at once and the stable pods keep serving; retry lets it roll to its
	// gate again; a commit of v2 then takes it back.
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/cli/deployment.yaml"), "registry.example/web:v2", "registry.example/web:v5")
	repo.commitAndPush("Release web v5")
	var v5 string
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		v5 = d.Status.CandidateTemplateHash
		g.Expect(v5).NotTo(BeElementOf(v1, v2, v3, ""))
	}, 3*time.Minute, 100*time.Millisecond).Should(Succeed())
	cli.ok("abort", "web", "--reason", "v5 is slow", "--repo", clone.dir)
	rollout := &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "cli", Name: "web"}}
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, delivery.DeepCopy()).Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		r := getObj(g, rollout.DeepCopy())
		g.Expect(r.Status.Abort).To(BeTrue())
		g.Expect(r.Status.StableRS).NotTo(BeEmpty())
		g.Expect(r.Status.AvailableReplicas).To(BeNumerically(">=", 1))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	out, code = cli.run("status", "web", "--timeout", "1m")
	g.Expect(code).To(Equal(1), out)
	cli.ok("retry", "web", "--repo", clone.dir)
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.CandidateTemplateHash).To(Equal(v5))
		g.Expect(getObj(g, rollout.DeepCopy()).Status.Abort).To(BeFalse())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/cli/deployment.yaml"), "registry.example/web:v5", "registry.example/web:v2")
	repo.commitAndPush("Back to web v2")
	g.Expect(cli.ok("status", "web", "--timeout", "2m")).To(ContainSubstring("is healthy: template " + v2))

	// A release whose analysis fails: Argo aborts it, and a CI job waiting
	// for it fails at once.
	failing.Store(true)
	repo.git("", "pull", "--quiet", "origin", "main")
	replaceInFile(t, filepath.Join(repo.dir, "apps/cli/deployment.yaml"), "registry.example/web:v2", "registry.example/web:v4")
	repo.commitAndPush("Release web v4")
	g.Eventually(func(g Gomega) string {
		return getObj(g, delivery.DeepCopy()).Status.CandidateTemplateHash
	}, time.Minute, 100*time.Millisecond).ShouldNot(BeEmpty())
	out, code = cli.run("status", "web", "--timeout", "3m")
	g.Expect(code).To(Equal(1))
	g.Expect(out).To(MatchRegexp(`✗ Delivery cli/web is Rejected: `))

	// The watch views drew every change and stop on Ctrl-C.
	got := getWatch.stop(g)
	t.Logf("sluice get -w printed:\n%s", got)
	g.Expect(got).To(MatchRegexp(`(?m)^web\s+Healthy\s+\S+\s+\S+\s+` + v2 + `\s+-\s+`))
	g.Expect(got).To(MatchRegexp(`(?m)^web\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+true\s+`))
	drawn := treeWatch.stop(g)
	g.Expect(drawn).To(ContainSubstring("\x1b[J"), "the tree is drawn again in place")
	g.Expect(drawn).To(ContainSubstring("registry.example/web:v3"))
	drawings := strings.Split(drawn, "\x1b[J")
	t.Logf("sluice tree -w drew the tree %d times; the last:\n%s", len(drawings), drawings[len(drawings)-1])
}
