package controllers

import (
	"context"
	"fmt"
	"maps"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	eventv1 "github.com/fluxcd/pkg/apis/event/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	fluxevents "github.com/fluxcd/pkg/runtime/events"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// MetaPushedCommitKey is the event metadata key, under the involved
// object's API group, of the last commit sluice pushed for a Delivery.
const MetaPushedCommitKey = "pushedCommit"

// commitStatusReasons are the events that say where a candidate stands, and
// so set a commit status on the revision they carry. Warnings reach commit
// status providers without it.
var commitStatusReasons = map[string]bool{
	adoptedReason:                       true,
	optedOutReason:                      true,
	promotedReason:                      true,
	deliveryv1.WaitingForApprovalReason: true,
}

// promotedReason is the reason of the event of a promotion past a gate.
const promotedReason = "Promoted"

// RevisionRecorder records events with Flux's revision metadata: the
// revision the object's Kustomization applied last (for a Kustomization,
// its own), so that notification-controller's commit status providers
// mark that commit, and a Delivery's last pushed commit.
type RevisionRecorder struct {
	fluxevents.Recorder
	// Client reads the Kustomizations; the manager's cached client.
	Client client.Client
}

var _ fluxevents.Recorder = &RevisionRecorder{}

// NewRevisionRecorder wraps recorder so that its events carry revision
// metadata read with c.
func NewRevisionRecorder(recorder fluxevents.Recorder, c client.Client) *RevisionRecorder {
	return &RevisionRecorder{Recorder: recorder, Client: c}
}

// Eventf records an event with the object's revision metadata.
func (r *RevisionRecorder) Eventf(object, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.AnnotatedEventf(object, related, nil, eventtype, reason, action, note, args...)
}

// AnnotatedEventf records an event with annotations and the object's
// revision metadata; the given annotations win.
func (r *RevisionRecorder) AnnotatedEventf(object, related runtime.Object, annotations map[string]string,
	eventtype, reason, action, note string, args ...any) {
	metadata := r.metadata(object, eventtype, reason)
	maps.Copy(metadata, annotations)
	if len(metadata) == 0 {
		metadata = nil
	}
	r.Recorder.AnnotatedEventf(object, related, metadata, eventtype, reason, action, note, args...)
}

// metadata is the revision metadata of an event about object, keyed under
// the object's API group as notification-controller expects.
func (r *RevisionRecorder) metadata(object runtime.Object, eventtype, reason string) map[string]string {
	md := map[string]string{}
	obj, ok := object.(client.Object)
	if !ok {
		return md
	}
	gvk, err := apiutil.GVKForObject(obj, r.Client.Scheme())
	if err != nil {
		return md
	}
	prefix := gvk.Group + "/"

	ks, ok := obj.(*kustomizev1.Kustomization)
	if !ok {
		ks = r.kustomizationOf(obj)
	}
	if ks != nil {
		rev, origin := appliedRevision(ks)
		if rev != "" {
			md[prefix+eventv1.MetaRevisionKey] = rev
		}
		if origin != "" {
			md[prefix+eventv1.MetaOriginRevisionKey] = origin
		}
	}
	if d, ok := obj.(*deliveryv1.Delivery); ok && d.Status.LastPushedCommit != "" {
		md[prefix+MetaPushedCommitKey] = d.Status.LastPushedCommit
	}
	if eventtype == corev1.EventTypeNormal && commitStatusReasons[reason] && md[prefix+eventv1.MetaRevisionKey] != "" {
		md[prefix+eventv1.MetaCommitStatusKey] = eventv1.MetaCommitStatusUpdateValue
	}
	return md
}

// kustomizationOf reads the Kustomization that applied obj, as its labels
// name it; nil when there is none.
func (r *RevisionRecorder) kustomizationOf(obj client.Object) *kustomizev1.Kustomization {
	name, ns := obj.GetLabels()[kustomizationNameLabel], obj.GetLabels()[kustomizationNamespaceLabel]
	if name == "" || ns == "" {
		return nil
	}
	// NOTE: events are recorded from within reconciles; a cache read
	// answers at once, the timeout only bounds a cache that is not synced.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ks := &kustomizev1.Kustomization{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ks); err != nil {
		return nil
	}
	return ks
}

// approvalRequest says what approves a gate: merging its promotion branch.
func approvalRequest(hash string, step *int32, branch, into string) string {
	at := ""
	if step != nil {
		at = fmt.Sprintf(" at step %d", *step)
	}
	return fmt.Sprintf("template %s waits for approval%s: merge promotion branch %s into %s to promote it", hash, at, branch, into)
}

// appliedRevision is the revision whose objects the Kustomization put in the
// cluster last, and its origin revision when known.
//
// NOTE: with wait: true, Flux sets lastAppliedRevision only once the health
// checks pass, and a canary waiting at a gate holds them: the revision that
// brought the candidate is then only lastAttemptedRevision. It is what runs
// unless Flux failed before or while applying it.
func appliedRevision(ks *kustomizev1.Kustomization) (revision, origin string) {
	revision, origin = ks.Status.LastAppliedRevision, ks.Status.LastAppliedOriginRevision
	attempted := ks.Status.LastAttemptedRevision
	if attempted == "" || attempted == revision {
		return revision, origin
	}
	switch conditions.GetReason(ks, meta.ReadyCondition) {
	case meta.ArtifactFailedReason, meta.BuildFailedReason, meta.ReconciliationFailedReason, meta.DependencyNotReadyReason:
		return revision, origin
	}
	return attempted, ""
}
