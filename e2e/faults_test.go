package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// The scenarios of this file break what sluice depends on while it works:
// the Git server, a Git host, the API server, the sluice replica that
// leads. Afterwards nothing sluice meant to write is lost, nothing is
// written twice, and sluice recovers by itself.

// gatedPolicy is a canary policy whose candidates wait for an approval
// merged through Git.
func gatedPolicy(ns string) string {
	return fmt.Sprintf(`apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: gated
  namespace: %s
spec:
  canary:
    steps:
      - setWeight: 50
      - pause: {}
`, ns)
}

// expectEachOnce fails for any change sluice committed more than once, and
// unless each of the Deliveries' actions is in Git exactly want[action]
// times (distinct template hashes or steps).
func expectEachOnce(g *WithT, intents map[string]int, deliveries []string, want map[string]int) {
	for intent, n := range intents {
		g.Expect(n).To(Equal(1), "sluice committed %q %d times", intent, n)
	}
	for _, d := range deliveries {
		for action, n := range want {
			got := 0
			for intent := range intents {
				if strings.HasPrefix(intent, d+" "+action+" ") || intent == d+" "+action {
					got++
				}
			}
			g.Expect(got).To(Equal(n), "%s's %s commits", d, action)
		}
	}
}

// requestSourceReconcile asks source-controller to fetch the GitRepository
// now.
func requestSourceReconcile(g *WithT, name string) {
	src := getObj(g, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}})
	update(g, src, func() {
		if src.Annotations == nil {
			src.Annotations = map[string]string{}
		}
		src.Annotations[meta.ReconcileRequestAnnotation] = time.Now().Format(time.RFC3339Nano)
	})
}

// waitArtifact waits until source-controller holds an artifact of commit.
func waitArtifact(g *WithT, name, commit string) {
	requestSourceReconcile(g, name)
	g.Eventually(func(g Gomega) {
		src := getObj(g, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}})
		g.Expect(src.Status.Artifact).NotTo(BeNil())
		g.Expect(src.Status.Artifact.Revision).To(HaveSuffix(commit))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
}

// suspendKustomization suspends or resumes a Kustomization.
func suspendKustomization(g *WithT, name string, suspended bool) {
	ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}})
	update(g, ks, func() { ks.Spec.Suspend = suspended })
}

// failedWrites is how many of sluice's Git writes have failed, from its
// metrics.
func failedWrites(g Gomega) int {
	resp, err := http.Get(env.SluiceMetricsURL)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, `sluice_git_write_duration_seconds_count{result="failed"} `); ok {
			n, err := strconv.Atoi(v)
			g.Expect(err).NotTo(HaveOccurred())
			return n
		}
	}
	return 0
}

// mergePromotionBranch merges the Delivery's promotion branch into main,
// as a reviewer does, once sluice has pushed it.
func mergePromotionBranch(t *testing.T, g *WithT, repo *gitRepo, ns, name string, within time.Duration) {
	t.Helper()
	var heads string
	g.Eventually(func() string {
		heads = repo.git("", "ls-remote", "origin", "refs/heads/sluice/promote/"+ns+"/"+name+"/*")
		return heads
	}, within, 200*time.Millisecond).ShouldNot(BeEmpty(), "no promotion branch for %s/%s", ns, name)
	approval := strings.Fields(heads)[0]
	repo.git("", "fetch", "--quiet", "origin", strings.Fields(heads)[1])
	pushWithRetry(t, repo, "", func() {
		repo.git("", "merge", "--quiet", "--no-ff", "-m", "Approve "+name, approval)
	})
}

// TestGitServerDown takes the Git server down for a minute or more while sluice
// has an adoption and an approval to push. Its writes fail and are retried
// (events and metrics say so), and once the server is back sluice pushes
// both by itself, without a restart: every commit it intended is in Git
// exactly once and no branch is lost.
func TestGitServerDown(t *testing.T) {
	g := NewWithT(t)
	const ns, outage = "outage", 60 * time.Second
	repo := newGitRepo(t, ns)
	repo.write(map[string]string{
		"apps/outage/namespace.yaml": namespace(ns),
		"apps/outage/policy.yaml":    gatedPolicy(ns),
		"apps/outage/alpha.yaml":     deployment("alpha", ns, "2", "registry.example/alpha:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated"),
	})
	repo.commitAndPush("Add alpha")
	repo.git("", "push", "--quiet", "origin", "HEAD:refs/heads/people/keep-me")
	fluxSyncCustom(t, ns, "./apps/outage", nil)
	waitHealthy(g, ns, "alpha", 2)

	// Release alpha v2 and add bravo; Flux fetches the commit, and applies
	// it only once the server is down.
	suspendKustomization(g, ns, true)
	pushWithRetry(t, repo, "Release alpha v2, add bravo", func() {
		replaceInFile(t, filepath.Join(repo.dir, "apps/outage/alpha.yaml"), "alpha:v1", "alpha:v2")
		repo.write(map[string]string{"apps/outage/bravo.yaml": deployment("bravo", ns, "2", "registry.example/bravo:v1",
			"sluice.dev/strategy: canary", "sluice.dev/policy: gated")})
	})
	waitArtifact(g, ns, repo.git("", "rev-parse", "HEAD"))

	failedBefore := failedWrites(g)
	g.Expect(env.Git.Stop()).To(Succeed())
	down := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := env.Git.Restart(); err != nil {
				t.Errorf("serving Git again: %v", err)
			}
		}
	})
	suspendKustomization(g, ns, false)

	// sluice tries to adopt bravo and to push alpha's approval, fails, and
	// says so.
	g.Eventually(func(g Gomega) {
		failed := events(g, "Deployment", ns, "bravo", "AdoptionFailed")
		g.Expect(failed).To(ContainElement(ContainSubstring("could not be fetched")))
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alpha"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(d.Status.PendingPromotionBranch).To(BeEmpty())
		g.Expect(events(g, "Delivery", ns, "alpha", "GitUnreachable")).To(ContainElement(ContainSubstring("could not be fetched")))
	}, 45*time.Second, 200*time.Millisecond).Should(Succeed())
	failedEarly := failedWrites(g)
	g.Expect(failedEarly).To(BeNumerically(">", failedBefore))
	t.Logf("writes failing %s into the outage: %d", time.Since(down).Round(time.Second), failedEarly-failedBefore)

	// Down for the rest of the minute: sluice keeps running and writes
	// nothing anywhere else.
	g.Consistently(func(g Gomega) {
		g.Expect(env.SluiceRunning()).To(BeTrue())
		err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "bravo"}, &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "bravo has a Delivery while Git is down")
	}, max(time.Until(down.Add(outage)), time.Second), time.Second).Should(Succeed())
	// Still down: sluice tries again within its retry interval (30 s),
	// which the rest of the minute may fall between.
	g.Eventually(func(g Gomega) {
		g.Expect(failedWrites(g)).To(BeNumerically(">", failedEarly))
	}, 45*time.Second, time.Second).Should(Succeed(), "sluice stopped retrying")

	g.Expect(env.Git.Restart()).To(Succeed())
	restarted = true
	up := time.Now()
	t.Logf("the Git server was down for %s", up.Sub(down).Round(time.Second))

	// Back: sluice adopts bravo and pushes alpha's promotion branch
	// without being restarted.
	mergePromotionBranch(t, g, repo, ns, "alpha", 2*time.Minute)
	t.Logf("server back → alpha's promotion branch pushed in %s", time.Since(up).Round(time.Second))
	waitHealthy(g, ns, "bravo", 2)
	t.Logf("server back → bravo adopted and healthy in %s", time.Since(up).Round(time.Second))
	g.Eventually(func(g Gomega) {
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alpha"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
		g.Expect(d.Spec.Promotion.Stable.Images).To(ContainElement(deliveryv1.ContainerImage{Name: "alpha", Image: "registry.example/alpha:v2"}))
		g.Expect(repo.git("", "ls-remote", "origin", "refs/heads/sluice/*")).To(BeEmpty(), "promotion branches are left")
	}, 2*time.Minute, 200*time.Millisecond).Should(Succeed())
	g.Expect(env.SluiceRunning()).To(BeTrue())

	intents := sluiceIntents(repo)
	expectEachOnce(g, intents, []string{ns + "/alpha"}, map[string]int{"adopt": 1, "promote": 2, "approve": 1})
	expectEachOnce(g, intents, []string{ns + "/bravo"}, map[string]int{"adopt": 1, "promote": 1})
	g.Expect(remoteHeads(repo)).To(And(ContainSubstring("refs/heads/main"), ContainSubstring("refs/heads/people/keep-me")))
}

// TestHangingGitHost points a GitRepository whose apps sluice delivers at
// a host that accepts connections and never answers, while sluice has an
// adoption and an approval to push there. Meanwhile another repository's
// app is adopted and its first stable template recorded as promptly as
// ever: the hanging host holds only its own writes.
func TestHangingGitHost(t *testing.T) {
	g := NewWithT(t)
	hanging, err := stack.StartHangingHost()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = hanging.Close() })

	held := newGitRepo(t, "held")
	held.write(map[string]string{
		"apps/held/namespace.yaml": namespace("held"),
		"apps/held/policy.yaml":    gatedPolicy("held"),
		"apps/held/web.yaml":       deployment("web", "held", "2", "registry.example/web:v1", "sluice.dev/strategy: canary", "sluice.dev/policy: gated"),
	})
	held.commitAndPush("Add web")
	fluxSyncCustom(t, "held", "./apps/held", nil)
	waitHealthy(g, "held", "web", 2)

	// Flux fetches a release of web and a new app, api; then the source
	// moves to the hanging host, and Flux applies what it fetched.
	suspendKustomization(g, "held", true)
	pushWithRetry(t, held, "Release web v2, add api", func() {
		replaceInFile(t, filepath.Join(held.dir, "apps/held/web.yaml"), "web:v1", "web:v2")
		held.write(map[string]string{"apps/held/api.yaml": deployment("api", "held", "2", "registry.example/api:v1",
			"sluice.dev/strategy: canary", "sluice.dev/policy: gated")})
	})
	waitArtifact(g, "held", held.git("", "rev-parse", "HEAD"))
	src := getObj(g, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "held"}})
	update(g, src, func() { src.Spec.URL = hanging.RepositoryURL("held") })
	t.Cleanup(func() {
		// Back to the real server, for what runs after.
		g := NewWithT(t)
		src := getObj(g, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "held"}})
		update(g, src, func() { src.Spec.URL = env.Git.RepositoryURL("held") })
	})
	suspendKustomization(g, "held", false)

	// sluice has api's adoption and web's promotion state to write to the
	// hanging host, and a connection of sluice's hangs there.
	heldBySluice := func(g Gomega) int {
		n, err := hanging.HeldBy(env.SluicePID())
		g.Expect(err).NotTo(HaveOccurred())
		return n
	}
	g.Eventually(func(g Gomega) {
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "held", Name: "web"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "held", Name: "api"}}).Status.AvailableReplicas).To(BeEquivalentTo(2))
		g.Expect(heldBySluice(g)).To(BeNumerically(">=", 1))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	hangingSince := time.Now()

	// Another repository's app: adopted, handed over and its first stable
	// template recorded, each write as prompt as with no host hanging.
	prompt := newGitRepo(t, "prompt")
	prompt.write(map[string]string{"apps/prompt/app.yaml": webApp("prompt", 2, "registry.example/web:v1", "sluice.dev/strategy: canary")})
	user := prompt.commitAndPush("Add web")
	fluxSync(t, "prompt", env.Git.RepositoryURL("prompt"), "./apps/prompt")
	g.Eventually(func(g Gomega) {
		ks := getObj(g, &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "prompt"}})
		g.Expect(ks.Status.LastAppliedRevision).To(HaveSuffix(user))
	}, time.Minute, 50*time.Millisecond).Should(Succeed())
	applied := time.Now()
	g.Eventually(func() string {
		return prompt.git("", "ls-remote", "origin", "refs/heads/main")
	}, 10*time.Second, 100*time.Millisecond).ShouldNot(HavePrefix(user), "the adoption was not pushed within 10s of Flux applying the app")
	t.Logf("prompt applied → adoption pushed in %s", time.Since(applied).Round(10*time.Millisecond))
	waitHealthy(g, "prompt", "web", 2)
	t.Logf("prompt applied → adopted, handed over, stable recorded in %s", time.Since(applied).Round(10*time.Millisecond))

	// All of it while sluice's write to the hanging host was still held:
	// it ends at the source's timeout, a minute by default.
	g.Expect(heldBySluice(g)).To(BeNumerically(">=", 1), "sluice no longer waits on the hanging host after %s", time.Since(hangingSince))
	g.Expect(events(g, "Deployment", "held", "api", "AdoptionFailed")).To(BeEmpty())
	d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "held", Name: "web"}})
	g.Expect(d.Status.PendingPromotionBranch).To(BeEmpty())
	intents := sluiceIntents(prompt)
	expectEachOnce(g, intents, []string{"prompt/web"}, map[string]int{"adopt": 1, "promote": 1})
}

// TestAPIServerRestartMidHandover kills kube-apiserver while a Deployment
// is being handed over to its Rollout, and starts it again. The handover
// completes with never fewer available replicas than the app serves with,
// and the adoption is in Git once.
func TestAPIServerRestartMidHandover(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const ns, replicas = "restart", 4
	repo := newGitRepo(t, ns)
	repo.write(map[string]string{"apps/restart/app.yaml": webApp(ns, replicas, "registry.example/web:v1", "sluice.dev/strategy: canary")})
	repo.commitAndPush("Add web")
	fluxSync(t, ns, env.Git.RepositoryURL(ns), "./apps/restart")
	g.Eventually(func(g Gomega) {
		g.Expect(getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}).Status.AvailableReplicas).To(BeEquivalentTo(replicas))
	}, time.Minute, 50*time.Millisecond).Should(Succeed())
	watch := watchServing(ns, "web")

	// The handover: the Rollout exists and the Deployment still serves.
	g.Eventually(func(g Gomega) {
		getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(dep.Spec.Replicas).To(HaveValue(BeEquivalentTo(replicas)))
	}, time.Minute, 20*time.Millisecond).Should(Succeed())
	started := time.Now()
	g.Expect(env.RestartAPIServer(ctx)).To(Succeed())
	t.Logf("kube-apiserver killed mid-handover and ready again in %s", time.Since(started).Round(10*time.Millisecond))

	d := waitHealthy(g, ns, "web", replicas)
	g.Eventually(func(g Gomega) {
		dep := getObj(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(dep.Spec.Replicas).To(HaveValue(BeEquivalentTo(0)))
		g.Expect(dep.Status.Replicas).To(BeEquivalentTo(0))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("kube-apiserver back → handover done and stable recorded in %s", time.Since(started).Round(10*time.Millisecond))
	g.Expect(d.Status.StableTemplateHash).NotTo(BeEmpty())

	minServing, samples := watch.finish()
	t.Logf("available replicas never fell below %d in %d samples read from the API server", minServing, samples)
	g.Expect(samples).To(BeNumerically(">", 10))
	g.Expect(minServing).To(BeNumerically(">=", replicas))
	intents := sluiceIntents(repo)
	expectEachOnce(g, intents, []string{ns + "/web"}, map[string]int{"adopt": 1, "promote": 1})
}

// serving samples an app's available replicas, its Deployment's and its
// Rollout's together, whenever the API server answers for both.
type serving struct {
	mu      sync.Mutex
	min     int32
	samples int
	stop    chan struct{}
	done    chan struct{}
}

func watchServing(ns, name string) *serving {
	s := &serving{min: 1 << 30, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ctx := context.Background()
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			dep := &appsv1.Deployment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
				continue
			}
			total := dep.Status.AvailableReplicas
			r := &rolloutsv1.Rollout{}
			switch err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, r); {
			case err == nil:
				total += r.Status.AvailableReplicas
			case !apierrors.IsNotFound(err):
				continue
			}
			s.mu.Lock()
			s.samples++
			s.min = min(s.min, total)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *serving) finish() (minAvailable int32, samples int) {
	close(s.stop)
	<-s.done
	return s.min, s.samples
}

// leaderElectionArgs elect a leader among sluice replicas within seconds.
var leaderElectionArgs = []string{
	"--enable-leader-election",
	"--leader-election-lease-duration=4s",
	"--leader-election-renew-deadline=3s",
	"--leader-election-retry-period=500ms",
}

// TestLeaderKilledMidPush runs sluice as replicas with leader election and
// kills the leader with SIGKILL once the server has taken in its push and
// before it hears so, twice (an adoption, then a promotion), while four
// apps are adopted and their first stable templates recorded. A replica
// that waited takes over each time; every commit sluice intended is in Git
// exactly once.
func TestLeaderKilledMidPush(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const ns = "leader"
	apps := []string{"alpha", "bravo", "charlie", "delta"}
	files := map[string]string{"apps/leader/namespace.yaml": namespace(ns)}
	for _, app := range apps {
		files["apps/leader/"+app+".yaml"] = deployment(app, ns, "2", "registry.example/"+app+":v1", "sluice.dev/strategy: canary")
	}
	repo := newGitRepo(t, ns)
	repo.write(files)
	repo.commitAndPush("Add four apps")
	repo.git("", "push", "--quiet", "origin", "HEAD:refs/heads/people/keep-me")

	// Two replicas instead of the stack's one.
	env.StopSluice(false)
	var replicas []*stack.SluiceReplica
	t.Cleanup(func() {
		env.Git.OnPush(nil)
		for _, r := range replicas {
			r.Stop(false)
		}
		if !env.SluiceRunning() {
			if err := env.StartSluice(context.Background()); err != nil {
				t.Errorf("starting sluice: %v", err)
			}
		}
	})
	startReplica := func(name string) {
		r, err := env.StartSluiceReplica(ctx, name, leaderElectionArgs...)
		g.Expect(err).NotTo(HaveOccurred())
		replicas = append(replicas, r)
	}
	startReplica("sluice-a")
	startReplica("sluice-b")
	leader := func(g Gomega) *stack.SluiceReplica {
		var leaders []*stack.SluiceReplica
		for _, r := range replicas {
			if !r.Running() {
				continue
			}
			ok, err := r.Leader(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			if ok {
				leaders = append(leaders, r)
			}
		}
		g.Expect(leaders).To(HaveLen(1), "one leader")
		return leaders[0]
	}
	g.Eventually(leader, 30*time.Second, 100*time.Millisecond).ShouldNot(BeNil())

	// Each of sluice's pushes to the repository waits for its answer until
	// the test has looked at it.
	landed, answer, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(done) })
	env.Git.OnPush(func(repository string) {
		if repository != ns {
			return
		}
		select {
		case landed <- struct{}{}:
			select {
			case <-answer:
			case <-done:
			}
		default:
		}
	})
	fluxSync(t, ns, env.Git.RepositoryURL(ns), "./apps/leader")
	// The first kill comes with an adoption (the discovery controller's
	// push), the second with a promotion (the write-back controller's).
	killed := map[string]bool{}
	for kill, action := range []string{"adopt", "promote"} {
		var pushed string
		for !strings.Contains(pushed, "\nSluice-Action: "+action+"\n") {
			if pushed != "" {
				answer <- struct{}{}
			}
			select {
			case <-landed:
			case <-time.After(2 * time.Minute):
				t.Fatalf("no %s of sluice's reached the server", action)
			}
			repo.git("", "fetch", "--quiet", "origin")
			pushed = repo.git("", "log", "-1", "--format=%B", "origin/main") + "\n"
		}
		var l *stack.SluiceReplica
		g.Eventually(func(g Gomega) { l = leader(g) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
		l.Stop(true)
		answer <- struct{}{}
		killed[l.Name] = true
		subject, _, _ := strings.Cut(pushed, "\n")
		t.Logf("kill %d: %s killed after the server took in %q", kill+1, l.Name, subject)
		// A new replica waits beside the one that takes over.
		startReplica(fmt.Sprintf("sluice-%c", 'c'+kill))
	}
	env.Git.OnPush(nil)
	g.Expect(killed).To(HaveLen(2), "the same replica was killed twice")

	for _, app := range apps {
		waitHealthy(g, ns, app, 2)
	}
	var survivor *stack.SluiceReplica
	g.Eventually(func(g Gomega) { survivor = leader(g) }, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	g.Expect(killed).NotTo(HaveKey(survivor.Name))

	intents := sluiceIntents(repo)
	var deliveries []string
	for _, app := range apps {
		deliveries = append(deliveries, ns+"/"+app)
	}
	expectEachOnce(g, intents, deliveries, map[string]int{"adopt": 1, "promote": 1})
	g.Expect(remoteHeads(repo)).To(And(ContainSubstring("refs/heads/main"), ContainSubstring("refs/heads/people/keep-me")))
}
