package controllers

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// A stable record waits while other Deliveries of its GitRepository are
// still rolling out, so that a revision releasing many apps records their
// stable templates in one commit rather than one each: for as long as
// others keep completing, at most stableQuiet after the last completion
// and stableBatchLimit after the first.
//
// Before that, it waits while Flux has yet to start applying the
// GitRepository's last revision with some of its Kustomizations: a commit
// then is one more revision for each of them to apply, and it waits for as
// long as Flux keeps getting through them, at most stableFluxQuiet after
// the last and stableFluxLimit in all. With one commit at a time in Flux,
// the records that complete meanwhile go in the next.
const (
	stableQuiet      = 10 * time.Second
	stableBatchLimit = 3 * time.Minute
	stableFluxQuiet  = 30 * time.Second
	stableFluxLimit  = 3 * time.Minute
)

// recordStable writes the Delivery's stable template, and in the same
// commit those of the other Deliveries whose rollouts completed and that
// Kustomizations of the same GitRepository apply: every commit is a
// revision Flux applies with all of them. While others are still rolling
// out and completing, it waits for them (see stableQuiet): the reconcile
// that finds the wait over writes the records of all. It returns how long
// to wait before looking again.
func (w writeBack) recordStable(ctx context.Context, now *metav1.Time) (time.Duration, error) {
	key := client.ObjectKeyFromObject(w.obj)
	if w.r.stableWritten(w.obj, w.source.ks) {
		// Pushed, and Flux has not applied a revision since: nothing to
		// do until it does.
		return 0, nil
	}
	// One batch of the GitRepository at a time: the reconciles that
	// waited behind it find their records written.
	unlock := w.r.sources.lock(w.source.repo)
	defer unlock()
	if w.r.stableWritten(w.obj, w.source.ks) {
		return 0, nil
	}
	kss, err := kustomizationsOf(ctx, w.r.Client, w.source.repo)
	if err != nil {
		return 0, err
	}
	if wait := w.r.fluxBusy.wait(w.source.repo, kss, lastAttempted, stableFluxQuiet, stableFluxLimit, time.Now()); wait > 0 {
		// NOTE: every due record's reconcile comes back at the wait's
		// end, and each Kustomization that applies the revision brings its
		// Deliveries' back: the one that finishes Flux's work ends it.
		w.r.settling.storeWait(w.source.repo, wait, time.Now())
		return wait, nil
	}
	// NOTE: every due record's reconcile comes here while the wait lasts,
	// a thousand of them in a fleet's burst, and each would list every
	// Delivery: the wait counts from a scan at most stableScanEvery old,
	// and only the batch is made from a fresh one.
	at := time.Now()
	scan, fresh := w.r.settling.lastScan(w.source.repo, at)
	if !fresh {
		if scan, err = w.r.scanDue(ctx, kss); err != nil {
			return 0, err
		}
		w.r.settling.storeScan(w.source.repo, scan, at)
	}
	if wait := w.r.settling.wait(w.source.repo, len(scan.due), scan.rolling, at); wait > 0 {
		w.r.settling.storeWait(w.source.repo, wait, at)
		return wait, nil
	}
	if fresh {
		if scan, err = w.r.scanDue(ctx, kss); err != nil {
			return 0, err
		}
	}
	w.r.settling.forgetScan(w.source.repo)
	w.r.settling.forgetWait(w.source.repo)
	var others []dueRecord
	for _, o := range scan.due {
		if client.ObjectKeyFromObject(o.d) != key {
			others = append(others, o)
		}
	}
	w.r.fluxBusy.done(w.source.repo)

	batch := []writeBack{w}
	settings := map[types.NamespacedName]gitSettings{}
	sources := map[*kustomizev1.Kustomization]*gitSource{}
	for _, o := range others {
		source, ok := sources[o.ks]
		if !ok {
			source = w.source
			if o.ks.Name != w.source.ks.Name || o.ks.Namespace != w.source.ks.Namespace {
				source = w.source.forKustomization(o.ks.DeepCopy())
			}
			sources[o.ks] = source
		}
		if other, ok := w.sibling(ctx, o.d.DeepCopy(), source, settings); ok {
			batch = append(batch, other)
		}
	}

	ready, changes, err := prepare(batch, func(b writeBack) (gitops.Change, error) { return b.stableChange(ctx, now) })
	if err != nil {
		return 0, err
	}
	// The candidate's fate is decided: any approval branch of its is
	// stale, the one a crash kept from being recorded as pending too.
	//
	// NOTE: before the record is pushed, not after: Flux may apply a record
	// that a sluice stopped right after pushing before the next sluice
	// looks at the Delivery, which then has nothing left to write.
	for i := 0; i < len(ready); i++ {
		b := ready[i]
		if !mayHaveApprovalBranches(b.obj) {
			continue
		}
		if err := b.pruneBranches(ctx, ""); err != nil {
			if b.obj == w.obj {
				return 0, err
			}
			// The sibling's own reconcile tries again.
			ready, changes = slices.Delete(ready, i, i+1), slices.Delete(changes, i, i+1)
			i--
		}
	}
	results, errs := w.r.Git.WriteAll(ctx, w.git.src, changes)
	var (
		ownErr  error
		written []*gitSource
	)
	for i, b := range ready {
		if errs[i] != nil {
			if i == 0 {
				ownErr = fmt.Errorf("writing the promote of %s/%s to Git: %w", w.obj.Namespace, w.obj.Name, errs[i])
			}
			continue
		}
		if !slices.Contains(written, b.source) {
			written = append(written, b.source)
		}
		w.r.stable.Store(client.ObjectKeyFromObject(b.obj), stableKey(b.obj, b.source.ks))
		if _, err := b.written(ctx, w.git.branch, "promote", results[i]); err != nil && i == 0 {
			ownErr = err
		}
	}
	// NOTE: records Git holds already, but the cluster does not, were
	// pushed by a sluice that stopped before asking Flux to fetch them.
	if len(written) > 0 {
		if err := w.source.requestReconcile(ctx, w.r.Client); err != nil {
			return 0, err
		}
	}
	if ownErr == nil && len(ready) > 1 {
		ctrl.LoggerFrom(ctx).V(1).Info("recorded stable templates together", "deliveries", len(ready), "kustomizations", len(written))
	}
	return 0, ownErr
}

// dueRecord is a Delivery whose stable record is due, and the
// Kustomization that applies it.
type dueRecord struct {
	d  *deliveryv1.Delivery
	ks *kustomizev1.Kustomization
}

// dueScan is what the Deliveries of a GitRepository's Kustomizations say
// of its stable records: those due, and whether others are still rolling
// out. Its Deliveries are the cache's own: read only.
type dueScan struct {
	due     []dueRecord
	rolling bool
}

// stableScanEvery is how old a scan of the due stable records may be to
// count a wait from.
const stableScanEvery = time.Second

// scanDue scans the Deliveries that the Kustomizations kss apply.
func (r *WriteBackReconciler) scanDue(ctx context.Context, kss []*kustomizev1.Kustomization) (dueScan, error) {
	// One list of every Delivery, read only (what joins the batch is
	// copied), rather than one list by labels per Kustomization: the
	// cache matches labels by reading every Delivery.
	var list deliveryv1.DeliveryList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return dueScan{}, err
	}
	applied := map[types.NamespacedName][]*deliveryv1.Delivery{}
	for i := range list.Items {
		d := &list.Items[i]
		by := types.NamespacedName{Namespace: d.Labels[kustomizationNamespaceLabel], Name: d.Labels[kustomizationNameLabel]}
		applied[by] = append(applied[by], d)
	}
	var scan dueScan
	for _, ks := range kss {
		for _, d := range applied[types.NamespacedName{Namespace: ks.Namespace, Name: ks.Name}] {
			if !writesFor(d, ks) {
				continue
			}
			switch {
			case r.stableDue(d, ks):
				scan.due = append(scan.due, dueRecord{d: d, ks: ks})
			case rollingOut(d):
				scan.rolling = true
			}
		}
	}
	return scan, nil
}

// stableChange prepares the commit that records the Delivery's stable
// template.
func (w writeBack) stableChange(ctx context.Context, now *metav1.Time) (gitops.Change, error) {
	obj, st := w.obj, w.obj.Status
	images, err := w.rolloutImages(ctx)
	if err != nil {
		return gitops.Change{}, err
	}
	return w.change(ctx, w.git.branch, "promote", st.StableTemplateHash, nil,
		fmt.Sprintf("Promote %s/%s: template %s is stable\n\nImages: %s", obj.Namespace, obj.Name, st.StableTemplateHash, gitops.FormatImages(images)),
		w.policy.Git.Commit.MessageTemplates.Promotion,
		gitops.Promotion{Switched: switchedObjects(w.policy), Stable: &deliveryv1.StableRelease{
			TemplateHash: st.StableTemplateHash, Revision: w.source.ks.Status.LastAppliedRevision, Images: images, PromotedAt: now,
		}})
}

// sibling returns the write-back of another Delivery, applied from source,
// when its policy writes to the same branch with the same credentials and
// signing key, so that its record may share the commit. settings holds the
// Git settings of the DeliveryPolicies resolved for the batch so far: each
// policy's Secrets are read once per batch.
func (w writeBack) sibling(ctx context.Context, d *deliveryv1.Delivery, source *gitSource, settings map[types.NamespacedName]gitSettings) (writeBack, bool) {
	policy, err := resolvePolicy(ctx, w.r.Client, d)
	if err != nil {
		return writeBack{}, false
	}
	var key types.NamespacedName
	if d.Spec.PolicyRef != nil {
		key = types.NamespacedName{Namespace: d.Namespace, Name: d.Spec.PolicyRef.Name}
	}
	g, ok := settings[key]
	if !ok {
		if g, err = w.source.settingsFor(ctx, w.r.recent.reader(w.r.Client), d.Namespace, policy); err != nil {
			return writeBack{}, false
		}
		if key.Name != "" {
			settings[key] = g
		}
	}
	if g.src.URL != w.git.src.URL || g.branch != w.git.branch ||
		!reflect.DeepEqual(g.src.Credentials, w.git.src.Credentials) ||
		!bytes.Equal(g.signingKey, w.git.signingKey) {
		return writeBack{}, false
	}
	return writeBack{r: w.r, obj: d, source: source, policy: policy, git: g}, true
}

// stableDue tells whether the Delivery's rollout completed on a template
// Git does not record as stable yet, nor was pushed for.
func (r *WriteBackReconciler) stableDue(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	st := d.Status
	return st.Phase == deliveryv1.PhaseHealthy && st.StableTemplateHash != "" && !stableRecorded(d) && !r.stableWritten(d, ks)
}

// rollingOut tells whether the Delivery is on its way to a stable record
// without waiting for a person: new, handing over from its Deployment, or
// progressing through its steps.
func rollingOut(d *deliveryv1.Delivery) bool {
	switch d.Status.Phase {
	case "", deliveryv1.PhasePending, deliveryv1.PhaseHandover, deliveryv1.PhaseProgressing:
		return true
	}
	return false
}

// mayHaveApprovalBranches tells whether a Delivery may have had promotion
// branches pushed: not one whose first rollout is being recorded, which
// went to stable without steps.
func mayHaveApprovalBranches(d *deliveryv1.Delivery) bool {
	p := d.Spec.Promotion
	return p.Stable != nil || len(p.Approvals) > 0 || p.Rejection != nil || d.Status.PendingPromotionBranch != ""
}

// stableKey is what a pushed stable record is remembered by: the template
// and the Kustomization revision applied when it was pushed.
func stableKey(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) string {
	return d.Status.StableTemplateHash + "@" + ks.Status.LastAppliedRevision
}

// stableWritten tells whether the Delivery's stable record was pushed and
// Flux has not applied another revision since. Once it has, Git is read
// again: the revision either records it, or lost it and it is written
// again.
func (r *WriteBackReconciler) stableWritten(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	v, ok := r.stable.Load(client.ObjectKeyFromObject(d))
	return ok && v == stableKey(d, ks)
}

// stableSettles remembers, by GitRepository, how long its stable records
// have been waiting for rollouts still under way, and the last scan of
// them.
type stableSettles struct {
	m     sync.Map
	scans sync.Map
	// waits holds the last timedWait of each GitRepository.
	waits sync.Map
}

// timedWait is a wait of a GitRepository's stable records found at at,
// ending at until.
type timedWait struct {
	at, until time.Time
}

// storeWait remembers that repo's stable records wait for wait from now.
func (s *stableSettles) storeWait(repo *sourcev1.GitRepository, wait time.Duration, now time.Time) {
	s.waits.Store(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}, timedWait{at: now, until: now.Add(wait)})
}

// forgetWait forgets repo's last wait, once its records are written.
func (s *stableSettles) forgetWait(repo *sourcev1.GitRepository) {
	s.waits.Delete(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
}

// recentWait returns how much longer the stable records of the
// GitRepository repo wait at now, when a wait was found at most
// stableScanEvery before; zero when none was.
//
// NOTE: while records wait, a fleet's due Deliveries come back by the
// thousand, and each would read the GitRepository and its Secret only to
// find the same wait.
func (s *stableSettles) recentWait(repo types.NamespacedName, now time.Time) time.Duration {
	v, ok := s.waits.Load(repo)
	if !ok {
		return 0
	}
	tw := v.(timedWait)
	if now.Sub(tw.at) > stableScanEvery || !tw.until.After(now) {
		return 0
	}
	return tw.until.Sub(now)
}

type timedScan struct {
	scan dueScan
	at   time.Time
}

// lastScan returns the last scan of repo's due stable records, and whether
// it is at most stableScanEvery old at now. Its callers hold the
// GitRepository's lock.
func (s *stableSettles) lastScan(repo *sourcev1.GitRepository, now time.Time) (dueScan, bool) {
	v, ok := s.scans.Load(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
	if !ok {
		return dueScan{}, false
	}
	ts := v.(timedScan)
	return ts.scan, now.Sub(ts.at) <= stableScanEvery
}

// storeScan remembers a scan of repo's due stable records made at at.
func (s *stableSettles) storeScan(repo *sourcev1.GitRepository, scan dueScan, at time.Time) {
	s.scans.Store(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}, timedScan{scan: scan, at: at})
}

// forgetScan forgets the last scan of repo's due stable records, once
// they are written.
func (s *stableSettles) forgetScan(repo *sourcev1.GitRepository) {
	s.scans.Delete(types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name})
}

// stableSettle is a GitRepository's wait: since when, when a rollout last
// completed, and how many records were due then.
type stableSettle struct {
	first, last time.Time
	due         int
}

// wait returns how much longer due stable records of repo may wait at now
// for the rollouts still under way (rolling); zero when they are to be
// written. The wait goes on while rollouts keep completing, at most
// stableQuiet after the last completion and stableBatchLimit after the
// first. Its callers hold the GitRepository's lock.
func (s *stableSettles) wait(repo *sourcev1.GitRepository, due int, rolling bool, now time.Time) time.Duration {
	key := types.NamespacedName{Namespace: repo.Namespace, Name: repo.Name}
	if !rolling {
		s.m.Delete(key)
		return 0
	}
	fresh := &stableSettle{first: now, last: now, due: due}
	v, _ := s.m.LoadOrStore(key, fresh)
	st := v.(*stableSettle)
	if now.Sub(st.deadline()) > stableQuiet {
		// A wait whose records nobody came back to write (their
		// Deliveries changed or went meanwhile) is over.
		st = fresh
		s.m.Store(key, st)
	}
	if due > st.due {
		st.last, st.due = now, due
	}
	wait := st.deadline().Sub(now)
	if wait <= 0 {
		s.m.Delete(key)
		return 0
	}
	return wait
}

// deadline is when the wait ends unless another rollout completes.
func (st *stableSettle) deadline() time.Time {
	return waitDeadline(st.first, st.last, stableQuiet, stableBatchLimit)
}
