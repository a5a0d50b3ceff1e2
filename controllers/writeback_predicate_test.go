package controllers

import (
	"testing"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// TestWriteBackInputChanged: the write-back looks again at a Delivery when
// something it decides on changes, and not for weights, other conditions
// or its own last pushed commit.
func TestWriteBackInputChanged(t *testing.T) {
	base := func() *deliveryv1.Delivery {
		d := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{
			Namespace: "apps", Name: "web", Generation: 2, ResourceVersion: "10",
			Labels: map[string]string{kustomizationNameLabel: "apps", kustomizationNamespaceLabel: "flux-system"},
		}}
		d.Status.ObservedGeneration = 2
		d.Status.Phase = deliveryv1.PhaseProgressing
		d.Status.CurrentStep = ptr.To[int32](1)
		d.Status.CanaryWeight = ptr.To[int32](20)
		d.Status.StableTemplateHash = "aaa"
		d.Status.CandidateTemplateHash = "bbb"
		conditions.MarkTrue(d, meta.ReadyCondition, "Progressing", "step 1 of 4")
		conditions.MarkUnknown(d, deliveryv1.PromotedCondition, "Progressing", "canary at 20%%")
		conditions.MarkTrue(d, deliveryv1.GitWriteBackCondition, "Succeeded", "pushed abc")
		return d
	}
	rejected := func(d *deliveryv1.Delivery) {
		d.Status.Phase = deliveryv1.PhaseRejected
		conditions.MarkFalse(d, deliveryv1.PromotedCondition, deliveryv1.RejectedReason, "analysis failed")
	}
	cases := []struct {
		name string
		// from changes the Delivery before the update, change in it.
		from, change func(d *deliveryv1.Delivery)
		passes       bool
	}{
		{name: "nothing but the resource version", change: func(d *deliveryv1.Delivery) {}, passes: false},
		{name: "canary weight", change: func(d *deliveryv1.Delivery) { d.Status.CanaryWeight = ptr.To[int32](40) }, passes: false},
		{name: "last pushed commit", change: func(d *deliveryv1.Delivery) { d.Status.LastPushedCommit = "def" }, passes: false},
		{name: "Ready message", change: func(d *deliveryv1.Delivery) {
			conditions.MarkTrue(d, meta.ReadyCondition, "Progressing", "step 2 of 4")
		}, passes: false},
		{name: "GitWriteBack message only", change: func(d *deliveryv1.Delivery) {
			conditions.MarkTrue(d, deliveryv1.GitWriteBackCondition, "Succeeded", "pushed def")
		}, passes: false},
		{name: "generation", change: func(d *deliveryv1.Delivery) { d.Generation = 3 }, passes: true},
		{name: "observed generation", change: func(d *deliveryv1.Delivery) { d.Status.ObservedGeneration = 1 }, passes: true},
		{name: "deletion", change: func(d *deliveryv1.Delivery) { now := metav1.Now(); d.DeletionTimestamp = &now }, passes: true},
		{name: "Kustomization label", change: func(d *deliveryv1.Delivery) { d.Labels[kustomizationNameLabel] = "other" }, passes: true},
		{name: "reconcile request", change: func(d *deliveryv1.Delivery) {
			d.Annotations = map[string]string{meta.ReconcileRequestAnnotation: "now"}
		}, passes: true},
		{name: "adoption mark", change: func(d *deliveryv1.Delivery) {
			d.Annotations = map[string]string{gitops.AdoptedAnnotation: "true"}
		}, passes: true},
		{name: "phase", change: func(d *deliveryv1.Delivery) { d.Status.Phase = deliveryv1.PhaseWaitingForApproval }, passes: true},
		{name: "step", change: func(d *deliveryv1.Delivery) { d.Status.CurrentStep = ptr.To[int32](2) }, passes: true},
		{name: "step cleared", change: func(d *deliveryv1.Delivery) { d.Status.CurrentStep = nil }, passes: true},
		{name: "stable template", change: func(d *deliveryv1.Delivery) { d.Status.StableTemplateHash = "bbb" }, passes: true},
		{name: "candidate template", change: func(d *deliveryv1.Delivery) { d.Status.CandidateTemplateHash = "ccc" }, passes: true},
		{name: "pending branch", change: func(d *deliveryv1.Delivery) { d.Status.PendingPromotionBranch = "sluice/approve" }, passes: true},
		{name: "rejection", change: rejected, passes: true},
		{name: "rejection message", from: rejected, change: func(d *deliveryv1.Delivery) {
			conditions.MarkFalse(d, deliveryv1.PromotedCondition, deliveryv1.RejectedReason, "analysis failed twice")
		}, passes: true},
		{name: "progress message", change: func(d *deliveryv1.Delivery) {
			conditions.MarkUnknown(d, deliveryv1.PromotedCondition, "Progressing", "canary at 40%%")
		}, passes: false},
		{name: "Promoted reason", change: func(d *deliveryv1.Delivery) {
			conditions.MarkTrue(d, deliveryv1.PromotedCondition, "Succeeded", "bbb is stable")
		}, passes: true},
		{name: "write-back failing", change: func(d *deliveryv1.Delivery) {
			conditions.MarkFalse(d, deliveryv1.GitWriteBackCondition, deliveryv1.GitConflictReason, "lost every race")
		}, passes: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			oldObj, newObj := base(), base()
			if tc.from != nil {
				tc.from(oldObj)
				tc.from(newObj)
			}
			newObj.ResourceVersion = "11"
			tc.change(newObj)
			if got := writeBackInputChanged.Update(event.UpdateEvent{ObjectOld: oldObj, ObjectNew: newObj}); got != tc.passes {
				t.Errorf("update passes = %v, want %v", got, tc.passes)
			}
		})
	}
	if !writeBackInputChanged.Create(event.CreateEvent{Object: base()}) {
		t.Error("a new Delivery does not pass")
	}
}
