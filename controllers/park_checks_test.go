package controllers

import (
	"context"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// TestNothingToWrite: the write-back goes to Git for a Delivery only when
// its status asks for a write, a branch to delete or a failure to clear, or
// when its Deployment's parking was not checked at the Kustomization's
// revision; every other reconcile stops before reading the GitRepository.
func TestNothingToWrite(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	ks := &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "apps"}}
	ks.Status.LastAppliedRevision = "main@sha1:2222"
	for name, appliedBy := range map[string]string{"web": ks.Name, "other": "others"} {
		d := newDeployment(ns, name)
		d.Labels = map[string]string{kustomizationNameLabel: appliedBy, kustomizationNamespaceLabel: ks.Namespace}
		d.Annotations = map[string]string{StrategyAnnotation: "canary"}
		g.Expect(k8sClient.Create(ctx, d)).To(Succeed())
	}
	r := &WriteBackReconciler{Client: k8sClient}

	delivery := func(deployment string, phase deliveryv1.DeliveryPhase, stable, recorded string) *deliveryv1.Delivery {
		d := newDelivery(ns, deployment, "canary", "")
		d.Generation = 3
		d.Status.Phase, d.Status.StableTemplateHash = phase, stable
		if recorded != "" {
			d.Spec.Promotion.Stable = &deliveryv1.StableRelease{TemplateHash: recorded}
		}
		return d
	}
	healthy := func() *deliveryv1.Delivery { return delivery("web", deliveryv1.PhaseHealthy, "aaaa", "aaaa") }

	for name, tc := range map[string]struct {
		d *deliveryv1.Delivery
		// parkedAt is the revision a park check last found the Delivery
		// parked at, if any.
		parkedAt string
		want     bool
	}{
		"progressing":                     {d: delivery("web", deliveryv1.PhaseProgressing, "aaaa", "aaaa"), want: true},
		"healthy, parked at the revision": {d: healthy(), parkedAt: ks.Status.LastAppliedRevision, want: true},
		"healthy, Deployment applied by another Kustomization": {
			d: delivery("other", deliveryv1.PhaseHealthy, "aaaa", "aaaa"), want: true},
		"healthy, never checked":               {d: healthy(), want: false},
		"healthy, parked at an older revision": {d: healthy(), parkedAt: "main@sha1:1111", want: false},
		"stable not recorded":                  {d: delivery("web", deliveryv1.PhaseHealthy, "bbbb", "aaaa"), parkedAt: ks.Status.LastAppliedRevision, want: false},
		"first stable not recorded":            {d: delivery("web", deliveryv1.PhaseHealthy, "aaaa", ""), want: false},
		"waiting for approval":                 {d: delivery("web", deliveryv1.PhaseWaitingForApproval, "aaaa", "aaaa"), parkedAt: ks.Status.LastAppliedRevision, want: false},
		"rejected":                             {d: delivery("web", deliveryv1.PhaseRejected, "aaaa", "aaaa"), parkedAt: ks.Status.LastAppliedRevision, want: false},
		"a promotion branch pending": {d: func() *deliveryv1.Delivery {
			d := delivery("web", deliveryv1.PhaseProgressing, "aaaa", "aaaa")
			d.Status.PendingPromotionBranch = "sluice/promote/web/1-bbbb"
			return d
		}(), want: false},
		"a write-back failure to clear": {d: func() *deliveryv1.Delivery {
			d := healthy()
			d.Status.Conditions = []metav1.Condition{{Type: deliveryv1.GitWriteBackCondition, Status: metav1.ConditionFalse, Reason: deliveryv1.GitConflictReason}}
			return d
		}(), parkedAt: ks.Status.LastAppliedRevision, want: false},
	} {
		t.Run(name, func(t *testing.T) {
			r.parked.Clear()
			if tc.parkedAt != "" {
				at := ks.DeepCopy()
				at.Status.LastAppliedRevision = tc.parkedAt
				r.parked.Store(client.ObjectKeyFromObject(tc.d), parkKey(tc.d, at))
			}
			quiet, after := r.nothingToWrite(ctx, tc.d, ks)
			NewWithT(t).Expect(quiet).To(Equal(tc.want))
			NewWithT(t).Expect(after).To(BeZero())
		})
	}

	// While Flux applies the Kustomization, a due check waits for the
	// revision it applies, looking again after a while in case the apply
	// fails.
	applying := ks.DeepCopy()
	applying.Status.Conditions = []metav1.Condition{{Type: "Reconciling", Status: metav1.ConditionTrue, Reason: "Progressing"}}
	r.parked.Clear()
	quiet, after := r.nothingToWrite(ctx, healthy(), applying)
	g.Expect(quiet).To(BeTrue())
	g.Expect(after).To(Equal(parkCheckRetry))
	r.parked.Store(client.ObjectKeyFromObject(healthy()), parkKey(healthy(), applying))
	quiet, after = r.nothingToWrite(ctx, healthy(), applying)
	g.Expect(quiet).To(BeTrue())
	g.Expect(after).To(BeZero(), "checked at the revision already")

	// A stable record pushed waits for Flux to apply it; one that waits
	// with its GitRepository's other records, found at most a second ago,
	// waits without reading the GitRepository again.
	unrecorded := delivery("web", deliveryv1.PhaseHealthy, "bbbb", "aaaa")
	ks.Spec.SourceRef = kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}
	repo := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ks.Namespace, Name: "fleet"}}
	now := time.Now()
	r.settling.storeWait(repo, 20*time.Second, now.Add(-2*stableScanEvery))
	quiet, _ = r.nothingToWrite(ctx, unrecorded, ks)
	g.Expect(quiet).To(BeFalse(), "the wait was found too long ago")
	r.settling.storeWait(repo, 20*time.Second, now)
	quiet, after = r.nothingToWrite(ctx, unrecorded, ks)
	g.Expect(quiet).To(BeTrue())
	g.Expect(after).To(BeNumerically("~", 20*time.Second, time.Second))
	r.settling.forgetWait(repo)
	r.stable.Store(client.ObjectKeyFromObject(unrecorded), stableKey(unrecorded, ks))
	quiet, after = r.nothingToWrite(ctx, unrecorded, ks)
	g.Expect(quiet).To(BeTrue(), "pushed, not yet applied")
	g.Expect(after).To(BeZero())
}
