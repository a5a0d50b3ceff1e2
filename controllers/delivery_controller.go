// Package controllers holds sluice's reconcilers: Kustomization discovery,
// Delivery (Rollout sync) and promotion.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	helper "github.com/fluxcd/pkg/runtime/controller"
	fluxevents "github.com/fluxcd/pkg/runtime/events"
	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/fluxcd/pkg/runtime/patch"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliveries/finalizers,verbs=update
// +kubebuilder:rbac:groups=delivery.sluice.dev,resources=deliverypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// DeliveryReconciler keeps a Delivery's status true to what runs.
type DeliveryReconciler struct {
	client.Client
	helper.Metrics

	// EventRecorder records Kubernetes events and, when configured,
	// forwards them to Flux's notification-controller.
	EventRecorder fluxevents.Recorder

	// ControllerName is the field manager of the status patches.
	ControllerName string
}

// stalledError is an error the user must fix: the Delivery is marked
// Stalled with its reason and is not retried until something changes.
type stalledError struct {
	reason string
	err    error
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

	obj := &deliveryv1.Delivery{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	patcher := patch.NewSerialPatcher(obj, r.Client)

	defer func() {
		if err := r.finalizeStatus(ctx, obj, patcher); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		r.Metrics.RecordDuration(ctx, obj, start)
		r.Metrics.RecordSuspend(ctx, obj, obj.Spec.Suspend)
		r.Metrics.RecordReadiness(ctx, obj)
		r.Metrics.RecordStalled(ctx, obj)
		r.Metrics.RecordReconciling(ctx, obj)
	}()

	if !obj.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, obj)
	}

	// Add the finalizer before anything else, so that a Delivery deleted
	// right after creation still hands its Deployment back.
	if !controllerutil.ContainsFinalizer(obj, deliveryv1.DeliveryFinalizer) {
		controllerutil.AddFinalizer(obj, deliveryv1.DeliveryFinalizer)
		return ctrl.Result{Requeue: true}, nil
	}

	if obj.Spec.Suspend {
		logger.Info("reconciliation is suspended for this Delivery")
		return ctrl.Result{}, nil
	}

	err := r.reconcile(ctx, obj)
	var se *stalledError
	switch {
	case errors.As(err, &se):
		conditions.MarkStalled(obj, se.reason, "%s", se.Error())
		conditions.MarkFalse(obj, meta.ReadyCondition, se.reason, "%s", se.Error())
		conditions.Delete(obj, meta.ReconcilingCondition)
		obj.Status.Phase = deliveryv1.PhaseFailed
		r.event(obj, corev1.EventTypeWarning, se.reason, se.Error())
		// Nothing changes by retrying: the watches bring the Delivery back
		// when the user fixes what the message names.
		return ctrl.Result{}, nil
	case err != nil:
		conditions.MarkFalse(obj, meta.ReadyCondition, meta.ReconciliationFailedReason, "%s", err.Error())
		r.event(obj, corev1.EventTypeWarning, meta.ReconciliationFailedReason, err.Error())
		return ctrl.Result{}, err
	}

	logger.V(1).Info("reconciliation finished", "duration", time.Since(start).String())
	return ctrl.Result{RequeueAfter: jitter.JitteredIntervalDuration(obj.GetRequeueAfter())}, nil
}

// reconcile resolves what the Delivery refers to, marking progress as it
// goes.
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
	policy, err := r.resolvePolicy(ctx, obj)
	if err != nil {
		return err
	}

	policyName := "built-in " + obj.Spec.Strategy
	if policy != nil {
		policyName = "DeliveryPolicy " + policy.Name
	}
	if obj.Status.Phase == "" || obj.Status.Phase == deliveryv1.PhaseFailed {
		obj.Status.Phase = deliveryv1.PhasePending
	}
	conditions.MarkTrue(obj, meta.ReadyCondition, deliveryv1.ResolvedReason,
		"Deployment %s resolved with %s", deployment.Name, policyName)
	return nil
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

// resolvePolicy returns the DeliveryPolicy the Delivery names, or nil for
// the built-in policy of its strategy.
func (r *DeliveryReconciler) resolvePolicy(ctx context.Context, obj *deliveryv1.Delivery) (*deliveryv1.DeliveryPolicy, error) {
	if obj.Spec.PolicyRef == nil {
		return nil, nil
	}
	policy := &deliveryv1.DeliveryPolicy{}
	key := client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.PolicyRef.Name}
	if err := r.Get(ctx, key, policy); err != nil {
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
	return policy, nil
}

// finalize releases the Delivery once what it ran is handed back.
func (r *DeliveryReconciler) finalize(_ context.Context, obj *deliveryv1.Delivery) (ctrl.Result, error) {
	controllerutil.RemoveFinalizer(obj, deliveryv1.DeliveryFinalizer)
	return ctrl.Result{}, nil
}

// finalizeStatus records the handled reconcile request and, when the
// reconciliation reached a verdict, the observed generation, then patches
// finalizers, status and conditions.
func (r *DeliveryReconciler) finalizeStatus(ctx context.Context, obj *deliveryv1.Delivery, patcher *patch.SerialPatcher) error {
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		obj.Status.LastHandledReconcileAt = v
	}

	// NOTE: a suspended Delivery has not observed its current generation,
	// so its observedGeneration stays where the last real run left it.
	if !obj.Spec.Suspend && (conditions.IsTrue(obj, meta.ReadyCondition) || conditions.IsTrue(obj, meta.StalledCondition)) {
		conditions.Delete(obj, meta.ReconcilingCondition)
		obj.Status.ObservedGeneration = obj.Generation
	}

	if conditions.IsFalse(obj, meta.ReadyCondition) && conditions.Has(obj, meta.ReconcilingCondition) {
		rc := conditions.Get(obj, meta.ReconcilingCondition)
		rc.Reason = meta.ProgressingWithRetryReason
		conditions.Set(obj, rc)
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
	return err
}

// event records an event about the Delivery.
func (r *DeliveryReconciler) event(obj *deliveryv1.Delivery, eventType, reason, msg string) {
	r.EventRecorder.Eventf(obj, nil, eventType, reason, "Reconcile", "%s", msg)
}
