package controllers

import (
	"context"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestKustomizationsOfASource: the Kustomizations that apply a
// GitRepository are those whose sourceRef names it, in their own namespace
// or in the one the reference gives, and not suspended; and Flux is still
// applying the GitRepository's revision while one of them has not applied
// it and is not failing.
func TestKustomizationsOfASource(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ns, other := newNamespace(t), newNamespace(t)
	scheme := runtime.NewScheme()
	g.Expect(kustomizev1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(testConfig, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	for _, ks := range []struct {
		namespace, name string
		ref             kustomizev1.CrossNamespaceSourceReference
		suspend         bool
	}{
		{ns, "apps", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}, false},
		{other, "tenant", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet", Namespace: ns}, false},
		{other, "same-name-elsewhere", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}, false},
		{ns, "other-repository", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "infra"}, false},
		{ns, "bucket", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.BucketKind, Name: "fleet"}, false},
		{ns, "suspended", kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}, true},
	} {
		g.Expect(c.Create(ctx, &kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ks.namespace, Name: ks.name},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Minute}, Path: "./" + ks.name,
				SourceRef: ks.ref, Suspend: ks.suspend},
		})).To(Succeed())
	}
	kc, err := cache.New(testConfig, cache.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	go func() { _ = kc.Start(ctx) }()
	g.Expect(kc.WaitForCacheSync(ctx)).To(BeTrue())

	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fleet"}}
	var kss []*kustomizev1.Kustomization
	g.Eventually(func(g Gomega) {
		kss, err = kustomizationsOf(ctx, kc, repo)
		g.Expect(err).NotTo(HaveOccurred())
		var names []string
		for _, ks := range kss {
			names = append(names, ks.Namespace+"/"+ks.Name)
		}
		g.Expect(names).To(ConsistOf(ns+"/apps", other+"/tenant"))
	}).Should(Succeed())

	var w fluxWaits
	g.Expect(w.wait(repo, kss, lastApplied, time.Minute, time.Hour, time.Now())).To(BeZero(), "a GitRepository without an artifact has nothing to apply")
	repo.Status.Artifact = &meta.Artifact{Revision: "main@sha1:2222"}
	current := func(r string) bool { return r == repo.Status.Artifact.Revision }
	applying := func(kss []*kustomizev1.Kustomization) int { return pending(kss, lastApplied, current) }
	unattempted := func(kss []*kustomizev1.Kustomization) int { return pending(kss, lastAttempted, current) }
	applied := func(revisions ...string) []*kustomizev1.Kustomization {
		var out []*kustomizev1.Kustomization
		for _, r := range revisions {
			out = append(out, &kustomizev1.Kustomization{Status: kustomizev1.KustomizationStatus{LastAttemptedRevision: r, LastAppliedRevision: r}})
		}
		return out
	}
	g.Expect(applying(applied("main@sha1:2222", "main@sha1:1111"))).To(Equal(1))
	g.Expect(applying(applied("main@sha1:1111", ""))).To(Equal(2))
	g.Expect(applying(applied("main@sha1:2222", "main@sha1:2222"))).To(BeZero())
	checkingHealth := applied("main@sha1:1111")[0]
	checkingHealth.Status.LastAttemptedRevision = "main@sha1:2222"
	checkingHealth.Status.Conditions = []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionUnknown, Reason: meta.ProgressingReason}}
	g.Expect(applying(append(applied("main@sha1:2222"), checkingHealth))).To(Equal(1), "one still checking the health of what it applied is waited for")
	g.Expect(unattempted(append(applied("main@sha1:2222", "main@sha1:1111"), checkingHealth))).To(Equal(1), "but it has started on the revision")
	failing := applied("main@sha1:1111")[0]
	failing.Status.Conditions = []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionFalse, Reason: "BuildFailed"}}
	g.Expect(applying(append(applied("main@sha1:2222"), failing))).To(BeZero(), "a failing Kustomization is not waited for")
	g.Expect(unattempted(append(applied("main@sha1:2222"), failing))).To(BeZero(), "a failing Kustomization is not waited for")
	failing.Status.Conditions[0].Status = metav1.ConditionUnknown
	g.Expect(applying(append(applied("main@sha1:2222"), failing))).To(Equal(1), "one on its way is")
	noArtifactYet := applied("")[0]
	noArtifactYet.Status.Conditions = []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionFalse, Reason: meta.ArtifactFailedReason}}
	g.Expect(applying(append(applied("main@sha1:2222"), noArtifactYet))).To(Equal(1), "one Flux retries until the artifact is there is waited for")
	g.Expect(unattempted(append(applied("main@sha1:2222"), noArtifactYet))).To(Equal(1), "one Flux retries until the artifact is there is waited for")
	canceled := applied("main@sha1:1111")[0]
	canceled.Status.Conditions = []metav1.Condition{{Type: meta.ReadyCondition, Status: metav1.ConditionFalse, Reason: meta.HealthCheckCanceledReason}}
	g.Expect(applying(append(applied("main@sha1:2222"), canceled))).To(Equal(1), "one whose health checks a new revision cancelled is waited for")
}

// TestFluxWaits: a write waits for as long as Flux keeps getting through
// the Kustomizations left, at most quiet after the last it finished and
// limit from the first wait; not at all when none is left; and afresh once
// it was made.
func TestFluxWaits(t *testing.T) {
	g := NewWithT(t)
	var w fluxWaits
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "fleet"}}
	other := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "infra"}}
	for _, r := range []*sourcev1.GitRepository{repo, other} {
		r.Status.Artifact = &meta.Artifact{Revision: "main@sha1:2222"}
	}
	// behind is n Kustomizations that applied an earlier revision.
	behind := func(n int) []*kustomizev1.Kustomization {
		kss := make([]*kustomizev1.Kustomization, n)
		for i := range kss {
			kss[i] = &kustomizev1.Kustomization{Status: kustomizev1.KustomizationStatus{LastAppliedRevision: "main@sha1:1111"}}
		}
		return kss
	}
	const quiet, limit = 30 * time.Second, 5 * time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	g.Expect(w.wait(repo, behind(0), lastApplied, quiet, limit, t0)).To(BeZero(), "Flux has nothing left: written at once")
	g.Expect(w.wait(repo, behind(10), lastApplied, quiet, limit, t0)).To(Equal(quiet))
	g.Expect(w.wait(repo, behind(10), lastApplied, quiet, limit, t0.Add(20*time.Second))).To(Equal(10*time.Second), "no progress since: the quiet counts from the first")
	g.Expect(w.wait(repo, behind(9), lastApplied, quiet, limit, t0.Add(25*time.Second))).To(Equal(quiet), "Flux finished one: the quiet starts again")
	g.Expect(w.wait(other, behind(3), lastApplied, quiet, limit, t0.Add(25*time.Second))).To(Equal(quiet), "each GitRepository waits on its own")
	g.Expect(w.wait(repo, behind(9), lastApplied, quiet, limit, t0.Add(25*time.Second+quiet))).To(BeZero(), "no progress for quiet: written")
	g.Expect(w.wait(repo, behind(9), lastApplied, quiet, limit, t0.Add(30*time.Second+quiet))).To(BeZero(), "the writer coming back within quiet writes")
	w.done(repo)
	g.Expect(w.wait(repo, behind(9), lastApplied, quiet, limit, t0.Add(time.Hour))).To(Equal(quiet), "once written, the next wait starts afresh")
	g.Expect(w.wait(repo, behind(0), lastApplied, quiet, limit, t0.Add(time.Hour))).To(BeZero(), "Flux got through all of them: written")

	// A wait nobody came back to end is forgotten; Flux that keeps
	// getting through Kustomizations holds the write at most limit.
	start, left := t0.Add(2*time.Hour), 1000
	g.Expect(w.wait(repo, behind(left), lastApplied, quiet, limit, start)).To(Equal(quiet))
	for at := quiet / 2; at < limit; at += quiet / 2 {
		left--
		g.Expect(w.wait(repo, behind(left), lastApplied, quiet, limit, start.Add(at))).To(BeNumerically(">", 0), "still progressing at %s", at)
	}
	g.Expect(w.wait(repo, behind(left-1), lastApplied, quiet, limit, start.Add(limit))).To(BeZero(), "limit from the first wait")
	g.Expect(w.wait(repo, behind(left-1), lastApplied, quiet, limit, start.Add(limit+2*quiet))).To(Equal(quiet), "forgotten: a new wait")

	// One Kustomization of those waiting looks again often: the first to
	// ask, until it stops asking.
	const poll = 2 * time.Second
	at := start.Add(limit + 2*quiet)
	ks := func(name string) *kustomizev1.Kustomization {
		return &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}}
	}
	g.Expect(w.polls(repo, ks("a"), poll, at)).To(BeTrue(), "the first to ask")
	g.Expect(w.polls(repo, ks("b"), poll, at.Add(time.Second))).To(BeFalse(), "a polls")
	g.Expect(w.polls(repo, ks("a"), poll, at.Add(poll))).To(BeTrue())
	g.Expect(w.polls(repo, ks("b"), poll, at.Add(poll+3*poll))).To(BeFalse(), "a asked three polls ago")
	g.Expect(w.polls(repo, ks("b"), poll, at.Add(poll+3*poll+time.Second))).To(BeTrue(), "a stopped asking: b takes over")
	g.Expect(w.polls(repo, ks("a"), poll, at.Add(poll+3*poll+2*time.Second))).To(BeFalse())
	w.done(repo)
	g.Expect(w.polls(repo, ks("a"), poll, at.Add(time.Minute))).To(BeTrue(), "no wait: nothing to share")
}

// TestFluxWaitsForTheRevisionItBeganAt: a Kustomization is through once
// it applied the revision the wait began at or any later one, so that
// others pushing every few seconds do not hold a write until the limit.
func TestFluxWaitsForTheRevisionItBeganAt(t *testing.T) {
	g := NewWithT(t)
	var w fluxWaits
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "fleet"}}
	at := func(revisions ...string) []*kustomizev1.Kustomization {
		var kss []*kustomizev1.Kustomization
		for _, r := range revisions {
			kss = append(kss, &kustomizev1.Kustomization{Status: kustomizev1.KustomizationStatus{LastAppliedRevision: r}})
		}
		return kss
	}
	const quiet, limit = 30 * time.Second, 5 * time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	repo.Status.Artifact = &meta.Artifact{Revision: "main@sha1:2222"}
	g.Expect(w.wait(repo, at("main@sha1:1111", "main@sha1:1111", "main@sha1:2222"), lastApplied, quiet, limit, t0)).To(Equal(quiet))
	// Someone pushes: Flux starts on the new revision with the
	// Kustomizations it had not got to.
	repo.Status.Artifact = &meta.Artifact{Revision: "main@sha1:3333"}
	g.Expect(w.wait(repo, at("main@sha1:3333", "main@sha1:1111", "main@sha1:2222"), lastApplied, quiet, limit, t0.Add(5*time.Second))).To(Equal(quiet),
		"one is still at the revision before the wait")
	repo.Status.Artifact = &meta.Artifact{Revision: "main@sha1:4444"}
	g.Expect(w.wait(repo, at("main@sha1:3333", "main@sha1:4444", "main@sha1:2222"), lastApplied, quiet, limit, t0.Add(10*time.Second))).To(BeZero(),
		"each applied a revision of the wait's, though not the newest")

	g.Expect(w.wait(repo, at("main@sha1:3333", "main@sha1:4444"), lastApplied, quiet, limit, t0.Add(time.Hour))).To(Equal(quiet),
		"a new wait knows only the revision it began at")
	// Flux applied a revision the wait was never asked during: none the
	// Kustomizations were at when it began.
	g.Expect(w.wait(repo, at("main@sha1:5555", "main@sha1:4444"), lastApplied, quiet, limit, t0.Add(time.Hour+time.Second))).To(BeZero())

	repo.Status.Artifact = &meta.Artifact{Revision: "main@sha1:5555"}
	g.Expect(w.wait(repo, at("", "main@sha1:5555"), lastApplied, quiet, limit, t0.Add(2*time.Hour))).To(Equal(quiet))
	g.Expect(w.wait(repo, at("", "main@sha1:5555", ""), lastApplied, quiet, limit, t0.Add(2*time.Hour+time.Second))).To(BeNumerically(">", 0),
		"one that applied nothing yet, new since the wait began, is not through")
	g.Expect(w.wait(repo, at("main@sha1:6666", "main@sha1:5555", "main@sha1:6666"), lastApplied, quiet, limit, t0.Add(2*time.Hour+2*time.Second))).To(BeZero())
}

// TestStableRecordsWaitWhileRolloutsComplete: stable records wait while
// rollouts of the GitRepository are under way and keep completing, at most
// stableQuiet after the last completion and stableBatchLimit after the
// first; with nothing under way, they are written at once.
func TestStableRecordsWaitWhileRolloutsComplete(t *testing.T) {
	g := NewWithT(t)
	var s stableSettles
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "fleet"}}
	other := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "infra"}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	g.Expect(s.wait(repo, 3, false, t0)).To(BeZero(), "nothing under way: written at once")
	g.Expect(s.wait(repo, 1, true, t0)).To(Equal(stableQuiet))
	g.Expect(s.wait(repo, 1, true, t0.Add(4*time.Second))).To(Equal(stableQuiet-4*time.Second), "no completion since: the quiet counts from the first")
	g.Expect(s.wait(repo, 2, true, t0.Add(6*time.Second))).To(Equal(stableQuiet), "another completed: the quiet starts again")
	g.Expect(s.wait(other, 1, true, t0.Add(6*time.Second))).To(Equal(stableQuiet), "each GitRepository waits on its own")
	g.Expect(s.wait(repo, 2, true, t0.Add(6*time.Second+stableQuiet))).To(BeZero(), "quiet for stableQuiet: written")
	g.Expect(s.wait(repo, 1, true, t0.Add(time.Minute))).To(Equal(stableQuiet), "once written, the next wait starts afresh")

	// A wait nobody came back to end is forgotten; rollouts that keep
	// completing hold the records at most stableBatchLimit from the first.
	start, due := t0.Add(time.Hour), 1
	for at := time.Duration(0); at < stableBatchLimit; at += stableQuiet / 2 {
		g.Expect(s.wait(repo, due, true, start.Add(at))).To(BeNumerically(">", 0), "still completing at %s", at)
		due++
	}
	g.Expect(s.wait(repo, due, true, start.Add(stableBatchLimit))).To(BeZero())
}
