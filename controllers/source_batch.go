package controllers

import (
	"context"
	"sync"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
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
		ref := ks.Spec.SourceRef
		ns := ref.Namespace
		if ns == "" {
			ns = ks.Namespace
		}
		if ks.Spec.Suspend || ref.Kind != sourcev1.GitRepositoryKind || ref.Name != repo.Name || ns != repo.Namespace {
			continue
		}
		out = append(out, ks)
	}
	return out, nil
}

// applying tells whether some of the Kustomizations kss have not yet
// applied the GitRepository's current revision: Flux is still building,
// applying or checking the health of what it applied. One that failed
// (Ready=False: its build, its health checks, a dependency) is not waited
// for: it applies the revision once what fails is fixed, not soon.
//
// NOTE: kustomize-controller sets status.lastAttemptedRevision before it
// builds, lists the inventory once it applied, and sets
// status.lastAppliedRevision only once the health checks pass; a
// Kustomization's Deployments are in sluice's scan only with its inventory,
// and its adoptions are written from the revision it applied.
func applying(repo *sourcev1.GitRepository, kss []*kustomizev1.Kustomization) bool {
	if repo.Status.Artifact == nil {
		return false
	}
	for _, ks := range kss {
		if ks.Status.LastAppliedRevision != repo.Status.Artifact.Revision &&
			!apimeta.IsStatusConditionFalse(ks.Status.Conditions, meta.ReadyCondition) {
			return true
		}
	}
	return false
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

// sourceWaits remembers, by GitRepository, since when a write to it has
// been waiting for Flux to finish applying its revision.
type sourceWaits struct {
	m sync.Map
}

// wait returns how much longer a write to repo may wait for Flux to apply
// its revisions, at most window in all since the first wait; zero when its
// time is up.
func (w *sourceWaits) wait(repo *sourcev1.GitRepository, window time.Duration) time.Duration {
	v, _ := w.m.LoadOrStore(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}, time.Now())
	return max(0, window-time.Since(v.(time.Time)))
}

// done forgets the wait of repo once its write is made.
func (w *sourceWaits) done(repo *sourcev1.GitRepository) {
	w.m.Delete(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
}

// sourceLocks holds a lock by GitRepository.
type sourceLocks struct {
	m sync.Map
}

// lock keeps the other holders of repo's lock waiting until unlock.
func (l *sourceLocks) lock(repo *sourcev1.GitRepository) (unlock func()) {
	v, _ := l.m.LoadOrStore(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}
