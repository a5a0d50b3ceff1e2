// Package controllers holds sluice's reconcilers: Kustomization discovery,
// Delivery (Rollout sync) and promotion.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	helper "github.com/fluxcd/pkg/runtime/controller"
	fluxevents "github.com/fluxcd/pkg/runtime/events"
	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/fluxcd/pkg/runtime/patch"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries/status,verbs=patch
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries/finalizers,verbs=update
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliverypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;patch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=list
// +kubebuilder:rbac:groups=argoproj.io,resources=rollouts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=argoproj.io,resources=rollouts/status,verbs=patch
// +kubebuilder:rbac:groups=argoproj.io,resources=analysisruns,verbs=get;list
// +kubebuilder:rbac:groups=argoproj.io,resources=analysistemplates;clusteranalysistemplates,verbs=get
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// DeliveryReconciler keeps a Delivery's status true to what runs.
type DeliveryReconciler struct {
	client.Client
	helper.Metrics

	// EventRecorder records Kubernetes events and, when configured,
	// forwards them to Flux's notification-controller.
	EventRecorder fluxevents.Recorder

	// APIReader reads straight from the API server, for objects sluice
	// only looks up now and then and does not cache.
	APIReader client.Reader

	// ControllerName is the field manager of everything sluice applies.
	ControllerName string

	// Shard says which Deliveries are this instance's; all when empty.
	Shard Shard

	healthChecks healthCheckRequests

	// written holds a writtenDelivery for each Delivery this controller
	// wrote.
	written sync.Map
}

// stalledError is an error the user must fix: the Delivery is marked
// Stalled with its reason and is not retried until something changes.
type stalledError struct {
	reason string
	// phase is the Delivery's phase, PhaseFailed when unset.
	phase deliveryv1.DeliveryPhase
	err   error
}

func (e *stalledError) Error() string { return e.err.Error() }
func (e *stalledError) Unwrap() error { return e.err }

func stalled(reason, format string, args ...any) error {
	return &stalledError{reason: reason, err: fmt.Errorf(format, args...)}
}

// Reconcile brings one Delivery's status up to date.
func (r *DeliveryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	start := time.Now()
	logger := log.FromContext(ctx)

	// NOTE: another shard's Delivery is left as the cache shows it,
	// without reading it from the API server.
	if cached := (&deliveryv1.Delivery{}); !r.Shard.all() && r.Get(ctx, req.NamespacedName, cached) == nil {
		if owned, err := r.Shard.Owns(ctx, cached); err != nil || !owned {
			return ctrl.Result{}, err
		}
	}
	obj, err := r.read(ctx, req.NamespacedName)
	if err != nil || obj == nil {
		return ctrl.Result{}, err
	}
	if owned, err := r.Shard.Owns(ctx, obj); err != nil || !owned {
		return ctrl.Result{}, err
	}

	patcher := patch.NewSerialPatcher(obj, r.Client)
	read := obj.DeepCopy()

	defer func() {
		err := r.finalizeStatus(ctx, obj, read, patcher, retErr != nil)
		switch {
		case err == nil:
		case apierrors.IsConflict(err) && retErr == nil:
			// The Delivery changed since it was read: what this reconcile
			// made of it is reconciled again from the new one.
			logger.V(1).Info("the Delivery changed while it was reconciled; reconciling it again")
			result = ctrl.Result{Requeue: true}
		default:
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		// NOTE: Flux's controllers record only the duration now; the
		// Ready and suspend series stay because config/monitoring reads
		// them. The Stalled and Reconciling series, six per Delivery,
		// were a fleet's largest metrics; the phase says as much.
		r.Metrics.RecordDuration(ctx, obj, start)
		r.Metrics.RecordSuspend(ctx, obj, obj.Spec.Suspend)
		r.Metrics.RecordReadiness(ctx, obj)
		if obj.DeletionTimestamp.IsZero() {
			recordPhase(obj, false)
		}
	}()

	if !obj.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, obj)
	}

	// Add the finalizer before anything else, so that a Delivery deleted
	// right after creation still hands its Deployment back.
	//
	// NOTE: written at once and the reconcile goes on, rather than ending
	// it for another: a fleet's new Deliveries queue by the thousand, and
	// that other would wait behind all of them.
	if !controllerutil.ContainsFinalizer(obj, deliveryv1.DeliveryFinalizer) {
		controllerutil.AddFinalizer(obj, deliveryv1.DeliveryFinalizer)
		err := r.Patch(ctx, obj, client.MergeFromWithOptions(read, client.MergeFromWithOptimisticLock{}),
			client.FieldOwner(r.ControllerName))
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the finalizer: %w", err)
		}
		r.wrote(read.ResourceVersion, obj)
		read = obj.DeepCopy()
	}

	if obj.Spec.Suspend {
		logger.Info("reconciliation is suspended for this Delivery")
		return ctrl.Result{}, nil
	}

	// An event for a stalled Delivery is recorded when it stalls or its
	// reason changes, not at every reconcile that finds it still stalled.
	stalledBefore := ""
	if conditions.IsStalled(obj) {
		stalledBefore = conditions.GetMessage(obj, meta.StalledCondition)
	}
	err = r.reconcile(ctx, obj)
	var se *stalledError
	switch {
	case errors.As(err, &se):
		conditions.MarkStalled(obj, se.reason, "%s", se.Error())
		conditions.MarkFalse(obj, meta.ReadyCondition, se.reason, "%s", se.Error())
		conditions.Delete(obj, meta.ReconcilingCondition)
		obj.Status.Phase = deliveryv1.PhaseFailed
		if se.phase != "" {
			obj.Status.Phase = se.phase
		}
		if se.Error() != stalledBefore {
			r.event(obj, corev1.EventTypeWarning, se.reason, se.Error())
		}
		// Retrying at once changes nothing: the watches bring the Delivery
		// back when the user fixes what the message names. Services,
		// HTTPRoutes and AnalysisTemplates are not watched, so a fix there
		// is seen at the interval, or at once with a reconcile request.
		return ctrl.Result{RequeueAfter: jitter.JitteredIntervalDuration(obj.GetRequeueAfter())}, nil
	case err != nil:
		conditions.MarkFalse(obj, meta.ReadyCondition, meta.ReconciliationFailedReason, "%s", err.Error())
		r.event(obj, corev1.EventTypeWarning, meta.ReconciliationFailedReason, err.Error())
		return ctrl.Result{}, err
	}

	logger.V(1).Info("reconciliation finished", "duration", time.Since(start).String())
	return ctrl.Result{RequeueAfter: jitter.JitteredIntervalDuration(obj.GetRequeueAfter())}, nil
}

// reconcile runs the Delivery's Deployment as a Rollout, marking progress
// as it goes: resolve what the Delivery refers to, choose the template to
// run, apply the Rollout, hand over from the Deployment, then translate the
// Rollout's progress, gates and aborts into the Delivery's status.
func (r *DeliveryReconciler) reconcile(ctx context.Context, obj *deliveryv1.Delivery) error {
	if obj.Generation != obj.Status.ObservedGeneration {
		conditions.MarkReconciling(obj, meta.ProgressingReason,
			"reconciling generation %d", obj.Generation)
	}
	conditions.Delete(obj, meta.StalledCondition)

	deployment, err := r.resolveDeployment(ctx, obj)
	if err != nil {
		return err
	}
	policy, err := resolvePolicy(ctx, r.Client, obj)
	if err != nil {
		return err
	}
	if err := r.checkReferences(ctx, obj.Namespace, policy); err != nil {
		return err
	}
	if err := holdDeploymentReplicas(ctx, r.Client, r.ControllerName, deployment); err != nil {
		return err
	}

	rollout, err := r.getRollout(ctx, obj)
	if err != nil {
		return err
	}
	if rollout != nil {
		// Record what is stable before a new template is applied: the
		// Rollout may be healthy now and progressing once it is applied.
		if before := viewRollout(rollout, policy); before.healthy {
			obj.Status.StableTemplateHash = before.runningHash
		}
	}
	release, err := chooseTemplate(obj, deployment, rollout, policy)
	if err != nil {
		return err
	}
	if release.template != nil {
		desired := renderRollout(obj, deployment, policy, release.template, release.hash)
		// NOTE: a Rollout that says all the rendered one says, replicas
		// included, needs no write, autoscaled or not: most reconciles
		// are such, and skip listing the autoscalers.
		if rollout != nil && !rolloutUpToDate(desired, rollout) {
			autoscaled, err := r.autoscaled(ctx, obj)
			if err != nil {
				return err
			}
			if autoscaled {
				// The autoscaler owns the Rollout's replicas once it exists;
				// spec.replicas only sizes its first revision.
				desired.Spec.Replicas = nil
			}
		}
		if rollout, err = r.applyRollout(ctx, desired, rollout); err != nil {
			return err
		}
	}
	view := viewRollout(rollout, policy)
	obj.Status.CurrentStep, obj.Status.CanaryWeight = view.currentStep, view.canaryWeight

	if done, err := r.handOver(ctx, obj, deployment, view); err != nil || !done {
		return err
	}
	if err := r.observeRelease(ctx, obj, rollout, view, release); err != nil {
		return err
	}
	// Git must be able to say what runs: a refused push stalls the Delivery
	// until the user gives sluice credentials that may push.
	//
	// NOTE: the phase stays what runs. The write-back controller writes for
	// the phase; a Failed one would have it find nothing to write, declare
	// that it writes again and so lift the stall, only for the next write
	// to fail: the two would take turns for as long as the cause remains.
	if c := conditions.Get(obj, deliveryv1.GitWriteBackCondition); c != nil && c.Status == metav1.ConditionFalse {
		return &stalledError{reason: c.Reason, phase: obj.Status.Phase, err: errors.New(c.Message)}
	}
	return nil
}

// observeRelease translates the Rollout's state into the Delivery's phase
// and conditions, promoting a gate whose approval is in the spec.
func (r *DeliveryReconciler) observeRelease(ctx context.Context, obj *deliveryv1.Delivery,
	rollout *rolloutsv1.Rollout, view rolloutView, release release) error {

	if view.healthy {
		obj.Status.StableTemplateHash = view.runningHash
	}
	obj.Status.CandidateTemplateHash = ""
	if view.runningHash != obj.Status.StableTemplateHash {
		obj.Status.CandidateTemplateHash = view.runningHash
	}

	// A rejection in Git of the candidate the Rollout is rolling out.
	rejection := obj.Spec.Promotion.Rejection
	rejectedInGit := rejection != nil && view.runningHash != obj.Status.StableTemplateHash &&
		rejection.TemplateHash == view.runningHash
	if obj.Status.RejectedTemplateHash != "" && obj.Status.RejectedTemplateHash != view.runningHash ||
		!view.aborted && !rejectedInGit {
		obj.Status.RejectedTemplateHash = ""
	}

	switch {
	case rejectedInGit && !view.aborted:
		// A person rejected the candidate in Git: abort it now, as
		// `kubectl argo rollouts abort` does. Once Argo has the abort the
		// Rollout is aborted, so this runs once per rejection.
		if err := r.abort(ctx, rollout); err != nil {
			return err
		}
		reason := rejectionReason(rejection)
		if obj.Status.RejectedTemplateHash != view.runningHash {
			r.event(obj, corev1.EventTypeWarning, deliveryv1.AbortedReason,
				fmt.Sprintf("aborted the Rollout of template %s, the stable template %s keeps serving: %s",
					view.runningHash, obj.Status.StableTemplateHash, reason))
		}
		obj.Status.RejectedTemplateHash = view.runningHash
		return r.rejected(obj, view, reason)

	case view.aborted && !rejectedInGit && obj.Status.RejectedTemplateHash != "" &&
		obj.Status.RejectedTemplateHash == view.runningHash &&
		release.intendedHash == view.runningHash:
		// The rejection of the aborted candidate left Git while the
		// Deployment still names it: roll it again, as `kubectl argo
		// rollouts retry` does. The hash stays recorded until the Rollout
		// is seen rolling, so that a Rollout read before the retry landed
		// does not count as a new rejection.
		if err := r.retry(ctx, rollout); err != nil {
			return err
		}
		if conditions.GetReason(obj, deliveryv1.PromotedCondition) == deliveryv1.RejectedReason {
			r.event(obj, corev1.EventTypeNormal, deliveryv1.RetriedReason,
				fmt.Sprintf("spec.promotion.rejection no longer names template %s: rolling it out again", view.runningHash))
		}
		msg := fmt.Sprintf("retrying template %s: spec.promotion.rejection no longer names it", view.runningHash)
		obj.Status.Phase = deliveryv1.PhaseProgressing
		conditions.MarkFalse(obj, deliveryv1.PromotedCondition, deliveryv1.RetriedReason, "%s", msg)
		conditions.MarkReconciling(obj, deliveryv1.RetriedReason, "%s", msg)
		conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.RetriedReason, "%s", msg)
		return nil

	case view.aborted:
		reason := view.abortMessage
		if rejectedInGit {
			obj.Status.RejectedTemplateHash = view.runningHash
		}
		if rejectedInGit && view.failedAnalysisRun == "" {
			// Aborted for the rejection in Git, or Argo's failed run
			// is no longer in its status: Git says why.
			reason = rejectionReason(rejection)
		} else if run, metric := r.failedAnalysis(ctx, rollout, view.failedAnalysisRun); metric != "" {
			reason = fmt.Sprintf("metric %s failed in AnalysisRun %s: %s", metric, run, reason)
		} else if run != "" {
			reason = fmt.Sprintf("AnalysisRun %s failed: %s", run, reason)
		}
		return r.rejected(obj, view, reason)

	case release.rejected != nil:
		return &stalledError{reason: deliveryv1.RejectedReason, phase: deliveryv1.PhaseRejected,
			err: fmt.Errorf("the Deployment's template %s was rejected (%s); change the Deployment or spec.promotion.rejection to release it",
				release.rejected.TemplateHash, release.rejected.Reason)}

	case view.gate != nil:
		approved, mismatch := approvalFor(obj, view.runningHash, *view.gate)
		if approved {
			if err := r.promote(ctx, rollout, view); err != nil {
				return err
			}
			promotions.WithLabelValues(obj.Namespace, obj.Name).Inc()
			r.event(obj, corev1.EventTypeNormal, "Promoted",
				fmt.Sprintf("promoted template %s past step %d", view.runningHash, *view.gate))
			obj.Status.Phase = deliveryv1.PhaseProgressing
			conditions.MarkReconciling(obj, deliveryv1.ProgressingReason,
				"promoted template %s past step %d", view.runningHash, *view.gate)
			conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.ProgressingReason,
				"promoted template %s past step %d", view.runningHash, *view.gate)
			return nil
		}
		msg := fmt.Sprintf("template %s waits for approval at step %d", view.runningHash, *view.gate)
		if view.inconclusiveRun != "" || hasPause(rollout.Status, rolloutsv1.PauseReasonInconclusiveAnalysis) {
			msg += ": " + r.inconclusiveAnalysis(ctx, rollout.Namespace, view.inconclusiveRun)
		}
		reason := deliveryv1.WaitingForApprovalReason
		if mismatch != "" {
			msg += "; " + mismatch
			reason = deliveryv1.ApprovalMismatchReason
			if conditions.GetReason(obj, meta.ReadyCondition) != reason {
				r.event(obj, corev1.EventTypeWarning, reason, msg)
			}
		}
		obj.Status.Phase = deliveryv1.PhaseWaitingForApproval
		conditions.MarkReconciling(obj, reason, "%s", msg)
		conditions.MarkFalse(obj, meta.ReadyCondition, reason, "%s", msg)
		return nil

	case !view.healthy || view.runningHash != release.intendedHash:
		msg := fmt.Sprintf("rolling out template %s", view.runningHash)
		if view.currentStep != nil {
			msg += fmt.Sprintf(" at step %d, weight %d", *view.currentStep, ptr.Deref(view.canaryWeight, 0))
		}
		obj.Status.Phase = deliveryv1.PhaseProgressing
		conditions.MarkReconciling(obj, deliveryv1.ProgressingReason, "%s", msg)
		conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.ProgressingReason, "%s", msg)
		return nil
	}

	obj.Status.Phase = deliveryv1.PhaseHealthy
	conditions.Delete(obj, meta.ReconcilingCondition)
	conditions.MarkTrue(obj, deliveryv1.PromotedCondition, meta.SucceededReason,
		"template %s is stable", view.runningHash)
	conditions.MarkTrue(obj, meta.ReadyCondition, meta.SucceededReason,
		"Rollout %s is healthy on template %s", rollout.Name, view.runningHash)
	return nil
}

// rejected marks the Delivery Rejected: the Rollout aborted the candidate
// and runs the stable template.
func (r *DeliveryReconciler) rejected(obj *deliveryv1.Delivery, view rolloutView, reason string) error {
	if !conditions.IsFalse(obj, deliveryv1.PromotedCondition) ||
		conditions.GetReason(obj, deliveryv1.PromotedCondition) != deliveryv1.RejectedReason {
		rejections.WithLabelValues(obj.Namespace, obj.Name).Inc()
	}
	conditions.MarkFalse(obj, deliveryv1.PromotedCondition, deliveryv1.RejectedReason,
		"template %s rejected: %s", view.runningHash, reason)
	return &stalledError{reason: deliveryv1.RejectedReason, phase: deliveryv1.PhaseRejected,
		err: fmt.Errorf("template %s rejected, the Rollout runs the stable template %s: %s",
			view.runningHash, obj.Status.StableTemplateHash, reason)}
}

// rejectionReason says why Git rejects a template.
func rejectionReason(rejection *deliveryv1.Rejection) string {
	if rejection.Reason == "" {
		return "rejected in Git (spec.promotion.rejection)"
	}
	return "rejected in Git (spec.promotion.rejection): " + rejection.Reason
}

// resolveDeployment returns the Deployment the Delivery delivers. The API
// server already guarantees that its selector matches its pod template.
func (r *DeliveryReconciler) resolveDeployment(ctx context.Context, obj *deliveryv1.Delivery) (*appsv1.Deployment, error) {
	deployment := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.DeploymentRef.Name}
	if err := r.Get(ctx, key, deployment); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, stalled(deliveryv1.DeploymentNotFoundReason,
				"spec.deploymentRef.name: Deployment %s not found in namespace %s", key.Name, key.Namespace)
		}
		return nil, fmt.Errorf("getting Deployment %s: %w", key.Name, err)
	}

	return deployment, nil
}

// resolvePolicy returns the policy of the Delivery: its DeliveryPolicy's
// spec, or the built-in policy of its strategy.
func resolvePolicy(ctx context.Context, c client.Reader, obj *deliveryv1.Delivery) (*deliveryv1.DeliveryPolicySpec, error) {
	if obj.Spec.PolicyRef == nil {
		spec := builtinPolicy(obj)
		return &spec, nil
	}
	policy := &deliveryv1.DeliveryPolicy{}
	key := client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.PolicyRef.Name}
	if err := c.Get(ctx, key, policy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, stalled(deliveryv1.PolicyNotFoundReason,
				"spec.policyRef.name: DeliveryPolicy %s not found in namespace %s", key.Name, key.Namespace)
		}
		return nil, fmt.Errorf("getting DeliveryPolicy %s: %w", key.Name, err)
	}
	if policy.Strategy() != obj.Spec.Strategy {
		return nil, stalled(deliveryv1.InvalidPolicyReason,
			"spec.strategy is %s but DeliveryPolicy %s describes %s", obj.Spec.Strategy, policy.Name, policy.Strategy())
	}
	return &policy.Spec, nil
}

// finalizeStatus records the handled reconcile request and, when the
// reconciliation reached a verdict, the observed generation, then patches
// finalizers, status and conditions.
func (r *DeliveryReconciler) finalizeStatus(ctx context.Context, obj, read *deliveryv1.Delivery, patcher *patch.SerialPatcher, failed bool) error {
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		obj.Status.LastHandledReconcileAt = v
	}

	// NOTE: a suspended Delivery has not observed its current generation,
	// so its observedGeneration stays where the last real run left it.
	if !obj.Spec.Suspend && (conditions.IsTrue(obj, meta.ReadyCondition) || conditions.IsTrue(obj, meta.StalledCondition)) {
		conditions.Delete(obj, meta.ReconcilingCondition)
		obj.Status.ObservedGeneration = obj.Generation
	}

	if failed && conditions.Has(obj, meta.ReconcilingCondition) {
		rc := conditions.Get(obj, meta.ReconcilingCondition)
		rc.Reason = meta.ProgressingWithRetryReason
		conditions.Set(obj, rc)
	}

	// NOTE: most reconciles of a fleet change nothing (a Rollout's status
	// moved on without changing what the Delivery says); the patch helper
	// would find no difference either, but only after converting both
	// objects to unstructured.
	if equality.Semantic.DeepEqual(read, obj) {
		return nil
	}
	if obj.DeletionTimestamp.IsZero() && equality.Semantic.DeepEqual(read.ObjectMeta, obj.ObjectMeta) {
		// NOTE: one request, where the patch helper sends the conditions
		// and the rest of the status apart. The lock on the version read
		// keeps the other writers' fields and conditions: the patch
		// applies to exactly what was read, or fails with a conflict.
		err := r.Status().Patch(ctx, obj, client.MergeFromWithOptions(read, client.MergeFromWithOptimisticLock{}),
			client.FieldOwner(r.ControllerName))
		if err == nil {
			r.wrote(read.ResourceVersion, obj)
		}
		r.healthCheckAgain(ctx, obj, read, err)
		return err
	}
	err := patcher.Patch(ctx, obj,
		patch.WithOwnedConditions{Conditions: []string{
			meta.ReadyCondition,
			meta.ReconcilingCondition,
			meta.StalledCondition,
			deliveryv1.PromotedCondition,
		}},
		patch.WithForceOverwriteConditions{},
		patch.WithFieldOwner(r.ControllerName),
	)
	if err != nil && !obj.DeletionTimestamp.IsZero() {
		err = kerrors.FilterOut(err, apierrors.IsNotFound)
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.written.Delete(client.ObjectKeyFromObject(obj))
	}
	return err
}

// read reads the Delivery: from the cache when it holds the version this
// controller last wrote, or as written when the cache still holds the
// version it was written over; else from the API server. It is nil when the
// Delivery is gone.
//
// NOTE: the status patch is the difference between this object and what
// the reconcile makes of it. Read from a cache that lags behind the last
// status patch, a field that the reconcile sets back to its lagging value
// would never be written. Another writer's newer version makes the patch
// fail with a conflict, and the reconcile runs again.
func (r *DeliveryReconciler) read(ctx context.Context, key client.ObjectKey) (*deliveryv1.Delivery, error) {
	obj := &deliveryv1.Delivery{}
	if v, ok := r.written.Load(key); ok {
		w := v.(writtenDelivery)
		err := r.Get(ctx, key, obj)
		switch {
		case err == nil && obj.ResourceVersion == w.version:
			if w.obj != nil {
				r.written.Store(key, writtenDelivery{version: w.version})
			}
			return obj, nil
		case err == nil && w.obj != nil && obj.ResourceVersion == w.over:
			return w.obj.DeepCopy(), nil
		case client.IgnoreNotFound(err) != nil:
			return nil, err
		}
	}
	if err := r.APIReader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.Delete(key)
			return nil, nil
		}
		return nil, err
	}
	return obj, nil
}

// writtenDelivery is what the Delivery controller last wrote to a Delivery:
// its version, and until the cache holds it, the version it was written
// over and the Delivery as written.
type writtenDelivery struct {
	version, over string
	obj           *deliveryv1.Delivery
}

// wrote remembers obj as written over the version over.
func (r *DeliveryReconciler) wrote(over string, obj *deliveryv1.Delivery) {
	r.written.Store(client.ObjectKeyFromObject(obj), writtenDelivery{version: obj.ResourceVersion, over: over, obj: obj.DeepCopy()})
}

// healthCheckAgain asks Flux to health check the Delivery again when the
// status just written took it from Ready to not Ready.
//
// NOTE: the Delivery's status is written whatever Flux makes of it; failing
// to ask is logged, and Flux sees it at its interval.
func (r *DeliveryReconciler) healthCheckAgain(ctx context.Context, obj, read *deliveryv1.Delivery, patchErr error) {
	if patchErr != nil || !stoppedBeingReady(read, obj) {
		return
	}
	if _, err := r.healthChecks.request(ctx, r.Client, obj, time.Now()); err != nil {
		log.FromContext(ctx).Error(err, "the Kustomization's Ready condition shows the Delivery's readiness at its next interval")
	}
}

// event records an event about the Delivery.
func (r *DeliveryReconciler) event(obj *deliveryv1.Delivery, eventType, reason, msg string) {
	r.EventRecorder.Eventf(obj, nil, eventType, reason, "Reconcile", "%s", msg)
}
