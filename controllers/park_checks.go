package controllers

import (
	"context"
	"fmt"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// NOTE: every revision a Kustomization applies may have lost the parking
// of its Deployments (a person put a replica count back), and every
// revision is new for all the Deliveries it applies: a stable-record
// commit for a thousand apps is a new revision for each of them. One check
// per Kustomization and revision, for all its Deliveries whose check is
// due, reads Git and builds the Kustomization once rather than once per
// Delivery.

// checkParked reads Git for the Delivery's Kustomization at the revision
// it applied and writes the parking of every Deployment of it that lost
// it: the Delivery's, and those of the other Deliveries the Kustomization
// applies whose check is due. A sibling whose check fails is left to its
// own reconcile, which checks it alone and reports what fails.
func (w writeBack) checkParked(ctx context.Context, now *metav1.Time) error {
	// One check of a Kustomization at a time: the reconciles of its other
	// Deliveries that waited behind it find theirs done.
	unlock := w.r.parking.lock(w.source.ks)
	defer unlock()
	if !w.parkCheckDue(ctx) {
		return nil
	}
	batch := []writeBack{w}
	var list deliveryv1.DeliveryList
	if err := w.r.List(ctx, &list, client.UnsafeDisableDeepCopy, client.MatchingLabels{
		kustomizationNameLabel: w.source.ks.Name, kustomizationNamespaceLabel: w.source.ks.Namespace,
	}); err != nil {
		return err
	}
	settings := map[types.NamespacedName]gitSettings{}
	for i := range list.Items {
		d := &list.Items[i]
		// The cheap checks first: the sibling's policy and Secrets are
		// read only for a check that is due.
		if d.Name == w.obj.Name || !parkCheckable(d, w.source.ks) || !w.r.parkCheckDue(ctx, d, w.source.ks) {
			continue
		}
		if other, ok := w.sibling(ctx, d.DeepCopy(), w.source, settings); ok {
			batch = append(batch, other)
		}
	}

	ready, changes, err := prepare(batch, func(b writeBack) (gitops.Change, error) { return b.parkChange(ctx, now) })
	if err != nil {
		return err
	}
	results, errs := w.r.Git.WriteAll(ctx, w.git.src, changes)
	var (
		ownErr error
		pushed bool
	)
	for i, b := range ready {
		err := errs[i]
		if err == nil {
			var p bool
			p, err = b.written(ctx, w.git.branch, "park", results[i])
			pushed = pushed || p
		} else {
			err = fmt.Errorf("writing the park of %s/%s to Git: %w", b.obj.Namespace, b.obj.Name, err)
		}
		if err != nil {
			if i == 0 {
				ownErr = err
			}
			continue
		}
		w.r.parked.Store(client.ObjectKeyFromObject(b.obj), parkKey(b.obj, b.source.ks))
	}
	if pushed {
		if err := w.source.requestReconcile(ctx, w.r.Client); err != nil {
			return err
		}
	}
	return ownErr
}

// parkCheckable tells whether a Delivery the Kustomization ks applies has
// its stable template recorded, so that only the parking of its Deployment
// may be left to check.
func parkCheckable(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	return writesFor(d, ks) && d.Status.Phase == deliveryv1.PhaseHealthy && d.Status.StableTemplateHash != "" && stableRecorded(d)
}

// writesFor tells whether the write-back writes for a Delivery in a batch
// of the Kustomization ks: not deleted, not suspended, and applied by ks.
func writesFor(d *deliveryv1.Delivery, ks *kustomizev1.Kustomization) bool {
	return d.DeletionTimestamp.IsZero() && !d.Spec.Suspend && inInventory(ks, d)
}

// stableRecorded tells whether Git records as stable the template the
// Delivery's Rollout last completed.
func stableRecorded(d *deliveryv1.Delivery) bool {
	stable := d.Spec.Promotion.Stable
	return stable != nil && stable.TemplateHash == d.Status.StableTemplateHash
}

// parkChange prepares the commit that parks the Delivery's Deployment in
// Git, and changes nothing when Git parks it already.
func (w writeBack) parkChange(ctx context.Context, now *metav1.Time) (gitops.Change, error) {
	st := w.obj.Status
	images, err := w.rolloutImages(ctx)
	if err != nil {
		return gitops.Change{}, err
	}
	switched := switchedObjects(w.policy)
	return w.change(ctx, w.git.branch, "park", st.StableTemplateHash, nil, parkMessage(w.obj, switched), "",
		gitops.Promotion{Switched: switched, ParkOnly: true, Stable: &deliveryv1.StableRelease{
			TemplateHash: st.StableTemplateHash, Revision: w.source.ks.Status.LastAppliedRevision, Images: images, PromotedAt: now,
		}})
}

// prepare makes the change of each write-back of a batch. One whose change
// cannot be made is left out, to its own reconcile, which reports what
// fails; but the first, the reconcile's own, fails the batch.
func prepare(batch []writeBack, change func(writeBack) (gitops.Change, error)) ([]writeBack, []gitops.Change, error) {
	var (
		ready   []writeBack
		changes []gitops.Change
	)
	for i, b := range batch {
		c, err := change(b)
		if err != nil {
			if i == 0 {
				return nil, nil, err
			}
			continue
		}
		ready, changes = append(ready, b), append(changes, c)
	}
	return ready, changes, nil
}
