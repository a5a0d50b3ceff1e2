package controllers

import (
	"context"
	"sync"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluice-dev/sluice/gitops"
)

// NOTE: every commit to a repository is a new revision of its
// GitRepository, which kustomize-controller applies again with each of the
// Kustomizations that use it, whatever folder the commit changed. A burst
// of commits, one per Kustomization, makes Flux apply every Kustomization
// once per commit; one commit for what the Kustomizations of a repository
// need, written once Flux has applied the revision with all of them, makes
// it apply each once.

// kustomizationsOf returns the Kustomizations this sluice watches (its
// shard's) that apply the GitRepository repo, the suspended ones left out.
func kustomizationsOf(ctx context.Context, c client.Reader, repo *sourcev1.GitRepository) ([]*kustomizev1.Kustomization, error) {
	var list kustomizev1.KustomizationList
	// Read only: the cache's objects are not copied.
	if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []*kustomizev1.Kustomization
	for i := range list.Items {
		ks := &list.Items[i]
		if ks.Spec.Suspend || sourceOf(ks) != (types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}) {
			continue
		}
		out = append(out, ks)
	}
	return out, nil
}

// lastApplied is the revision Flux last applied with the
// Kustomization, and lastAttempted the one it last started on: a
// write waits for Flux to apply (or start on) a revision with every
// Kustomization of the GitRepository (see fluxWaits).
//
// NOTE: kustomize-controller sets status.lastAttemptedRevision before it
// builds, lists the inventory once it applied, and sets
// status.lastAppliedRevision only once the health checks pass; a
// Kustomization's Deployments are in sluice's scan only with its inventory,
// and its adoptions are written from the revision it applied. One that
// started on a revision and checks its health has applied it: a commit
// now is not one more revision for it to start on.
func lastApplied(ks *kustomizev1.Kustomization) string { return ks.Status.LastAppliedRevision }

func lastAttempted(ks *kustomizev1.Kustomization) string { return ks.Status.LastAttemptedRevision }

// pending returns how many of the Kustomizations kss are not at a revision
// done says is enough: Flux is still building, applying or checking the
// health of what it applied, or waits a moment for the source's artifact.
// One that failed (Ready=False: its build, its health checks, a
// dependency) is not waited for: it applies the revision once what fails
// is fixed, not soon.
func pending(kss []*kustomizev1.Kustomization, revision func(*kustomizev1.Kustomization) string, done func(string) bool) int {
	n := 0
	for _, ks := range kss {
		if !done(revision(ks)) && !failing(ks) {
			n++
		}
	}
	return n
}

// failing tells whether Flux cannot apply the Kustomization until something
// is fixed: Ready=False, except for what kustomize-controller retries on
// its own within seconds. A Kustomization created with its GitRepository is
// Ready=False until the source's first artifact is there, and a fleet's
// first pass meets a hundred of them.
func failing(ks *kustomizev1.Kustomization) bool {
	switch conditions.GetReason(ks, meta.ReadyCondition) {
	case meta.ArtifactFailedReason, meta.HealthCheckCanceledReason:
		return false
	}
	return conditions.IsFalse(ks, meta.ReadyCondition)
}

// forKustomization is the source as another Kustomization of the same
// GitRepository writes to it: the same repository, branch and credentials,
// and that Kustomization's build.
func (s *gitSource) forKustomization(ks *kustomizev1.Kustomization) *gitSource {
	other := *s
	other.ks = ks
	other.build = gitops.Kustomization{Path: ks.Spec.Path, Flux: ks, Ignore: s.build.Ignore}
	return &other
}

// fluxWaits holds, by GitRepository, the waits of writes for Flux to
// finish applying a revision with the GitRepository's Kustomizations. A
// wait goes on for as long as Flux makes progress, at most quiet after the
// last Kustomization it finished and limit after the wait began: one that
// stopped making progress (a health check that waits for its timeout)
// holds no write for longer than quiet.
//
// NOTE: a Kustomization is through once it is at any revision the
// GitRepository had since the wait began: each holds the one the wait
// began at. Others who push every few seconds make a new revision before
// Flux gets through the last one with a fleet, and a wait for the newest
// would last until its limit every time. The wait sees the revisions of
// the GitRepository when it is asked; one it was not asked during is
// still known as none of those the Kustomizations were at when it began.
type fluxWaits struct {
	m sync.Map
}

// fluxWait is one GitRepository's wait: since when, when Flux last
// finished a Kustomization, how many were left then, and the revisions
// the GitRepository had since it began.
type fluxWait struct {
	mu          sync.Mutex
	first, last time.Time
	left        int
	// seen are the GitRepository's revisions since the wait began, and
	// before those the Kustomizations were at then.
	seen, before map[string]bool
	// poller is the Kustomization whose reconciles look again soon while
	// the wait lasts, and polled when one last did.
	poller types.NamespacedName
	polled time.Time
}

// wait returns how much longer a write to repo may wait at now for the
// Kustomizations kss that Flux has still to get through (by revision: what
// they applied, or attempted), with the wait's quiet and limit; zero when
// it is to be made.
func (w *fluxWaits) wait(repo *sourcev1.GitRepository, kss []*kustomizev1.Kustomization, revision func(*kustomizev1.Kustomization) string,
	quiet, limit time.Duration, now time.Time) time.Duration {

	key := types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}
	if repo.Status.Artifact == nil {
		// No revision yet: nothing to apply.
		w.m.Delete(key)
		return 0
	}
	current := repo.Status.Artifact.Revision
	v, ok := w.m.Load(key)
	if !ok {
		if pending(kss, revision, func(r string) bool { return r == current }) == 0 {
			return 0
		}
		v, _ = w.m.LoadOrStore(key, &fluxWait{})
	}
	fw := v.(*fluxWait)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.seen == nil || now.Sub(fw.deadline(quiet, limit)) > quiet {
		// A new wait, or one nobody came back to end (the writes went
		// meanwhile): this one starts now.
		fw.first, fw.last, fw.left, fw.seen, fw.before = now, now, 0, map[string]bool{}, map[string]bool{}
		for _, ks := range kss {
			fw.before[revision(ks)] = true
		}
	}
	fw.seen[current] = true
	left := pending(kss, revision, func(r string) bool { return r != "" && (fw.seen[r] || !fw.before[r]) })
	if left == 0 {
		w.m.Delete(key)
		return 0
	}
	if fw.left > 0 && left < fw.left {
		fw.last = now
	}
	fw.left = left
	return max(0, fw.deadline(quiet, limit).Sub(now))
}

// polls tells whether the Kustomization ks is the one, of those whose
// writes wait on repo's wait, that looks again every poll rather than at
// the wait's deadline: the first to ask, until it has not asked for three
// polls. The one that finds the wait over writes for all of them, so one
// looking often is enough to see the end soon, whichever Kustomization
// Flux finishes last.
func (w *fluxWaits) polls(repo *sourcev1.GitRepository, ks *kustomizev1.Kustomization, poll time.Duration, now time.Time) bool {
	v, ok := w.m.Load(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
	if !ok {
		return true
	}
	fw := v.(*fluxWait)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	key := client.ObjectKeyFromObject(ks)
	if fw.poller != key && !fw.polled.IsZero() && now.Sub(fw.polled) <= 3*poll {
		return false
	}
	fw.poller, fw.polled = key, now
	return true
}

// done forgets the wait of repo once its write is made.
func (w *fluxWaits) done(repo *sourcev1.GitRepository) {
	w.m.Delete(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
}

// deadline is when the wait ends unless Flux finishes another
// Kustomization.
func (fw *fluxWait) deadline(quiet, limit time.Duration) time.Time {
	return waitDeadline(fw.first, fw.last, quiet, limit)
}

// waitDeadline is when a wait that began at first, and last saw progress
// at last, ends: quiet after last, and at most limit after first.
func waitDeadline(first, last time.Time, quiet, limit time.Duration) time.Time {
	end, capped := last.Add(quiet), first.Add(limit)
	if capped.Before(end) {
		return capped
	}
	return end
}

// objectLocks holds a lock by object, of one kind: GitRepository or
// Kustomization.
type objectLocks struct {
	m sync.Map
}

// lock keeps the other holders of obj's lock waiting until unlock.
func (l *objectLocks) lock(obj client.Object) (unlock func()) {
	v, _ := l.m.LoadOrStore(client.ObjectKeyFromObject(obj), &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}
