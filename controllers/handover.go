package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/jitter"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// ownsReplicas tells whether manager already owns the Deployment's
// spec.replicas through server-side apply.
func ownsReplicas(deployment *appsv1.Deployment, manager string) bool {
	for _, mf := range deployment.ManagedFields {
		if mf.Manager == manager && mf.Operation == metav1.ManagedFieldsOperationApply &&
			mf.FieldsV1 != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:replicas"`) {
			return true
		}
	}
	return false
}

// holdDeploymentReplicas makes sluice (field manager manager) a co-owner
// of the Deployment's spec.replicas at its current value.
//
// NOTE: Flux applies with server-side apply and force. When the replicas
// line leaves Git (the adoption commit moves it to the Delivery) and no
// other manager owns the field, the API server resets it to 1. Owning it
// first keeps the value where it is.
func holdDeploymentReplicas(ctx context.Context, c client.Client, manager string, deployment *appsv1.Deployment) error {
	if ownsReplicas(deployment, manager) {
		return nil
	}
	return scaleDeployment(ctx, c, manager, deployment, ptr.Deref(deployment.Spec.Replicas, 1))
}

// scaleDeployment sets the Deployment's spec.replicas with server-side
// apply as field manager manager.
func scaleDeployment(ctx context.Context, c client.Client, manager string, deployment *appsv1.Deployment, replicas int32) error {
	apply := appsv1ac.Deployment(deployment.Name, deployment.Namespace).
		WithSpec(appsv1ac.DeploymentSpec().WithReplicas(replicas))
	if err := c.Apply(ctx, apply, client.FieldOwner(manager), client.ForceOwnership); err != nil {
		return fmt.Errorf("scaling Deployment %s to %d: %w", deployment.Name, replicas, err)
	}
	deployment.Spec.Replicas = ptr.To(replicas)
	return nil
}

// handOver scales the Deployment to zero once the Rollout has all its
// replicas available, so that across both there are never fewer available
// replicas than desired. It reports whether the handover is done.
func (r *DeliveryReconciler) handOver(ctx context.Context, obj *deliveryv1.Delivery,
	deployment *appsv1.Deployment, view rolloutView) (bool, error) {

	if ptr.Deref(deployment.Spec.Replicas, 1) == 0 {
		return true, nil
	}
	if optingOut(obj, deployment) {
		// Git gave the Deployment its replicas back and Flux prunes the
		// Delivery next: the finalizer hands the app back.
		return true, nil
	}
	want := obj.GetReplicas()
	if !view.observed || view.available < want || (!view.healthy && obj.Status.StableTemplateHash == "") {
		msg := fmt.Sprintf("the Rollout has %d of %d replicas available; Deployment %s keeps serving until it has all",
			view.available, want, deployment.Name)
		obj.Status.Phase = deliveryv1.PhaseHandover
		conditions.MarkReconciling(obj, deliveryv1.HandoverReason, "%s", msg)
		conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.HandoverReason, "%s", msg)
		return false, nil
	}
	if err := scaleDeployment(ctx, r.Client, r.ControllerName, deployment, 0); err != nil {
		return false, err
	}
	r.event(obj, corev1.EventTypeNormal, deliveryv1.HandoverReason,
		fmt.Sprintf("the Rollout serves with %d available replicas; scaled Deployment %s to 0", view.available, deployment.Name))
	return true, nil
}

// optingOut tells whether the Deployment of an adopted Delivery lost its
// strategy annotation: sluice's opt-out commit restores its replicas in Git.
func optingOut(obj *deliveryv1.Delivery, deployment *appsv1.Deployment) bool {
	_, annotated := deployment.Annotations[StrategyAnnotation]
	return !annotated && obj.Annotations[gitops.AdoptedAnnotation] == "true"
}

// finalize hands the app back to the Deployment: it scales the Deployment up
// to the Delivery's replicas, waits until they are available, and only then
// removes the Rollout and the finalizer.
func (r *DeliveryReconciler) finalize(ctx context.Context, obj *deliveryv1.Delivery) (ctrl.Result, error) {
	rollout := &rolloutsv1.Rollout{}
	err := r.Get(ctx, client.ObjectKeyFromObject(obj), rollout)
	owned := err == nil && metav1.IsControlledBy(rollout, obj)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}

	deployment := &appsv1.Deployment{}
	err = r.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: obj.Spec.DeploymentRef.Name}, deployment)
	switch {
	case apierrors.IsNotFound(err):
		// Nothing to hand back to.
	case err != nil:
		return ctrl.Result{}, err
	default:
		want := servingReplicas(obj, rollout, owned)
		if ptr.Deref(deployment.Spec.Replicas, 1) < want {
			if err := scaleDeployment(ctx, r.Client, r.ControllerName, deployment, want); err != nil {
				return ctrl.Result{}, err
			}
		}
		if !deploymentAvailable(deployment, want) {
			if obj.Annotations[HandBackAnnotation] == HandBackForce {
				r.event(obj, corev1.EventTypeWarning, deliveryv1.HandoverReason,
					fmt.Sprintf("handing back to Deployment %s with %d of %d replicas available, as annotation %s=%s asks",
						deployment.Name, deployment.Status.AvailableReplicas, want, HandBackAnnotation, HandBackForce))
			} else {
				obj.Status.Phase = deliveryv1.PhaseHandingBack
				stuck, retry := handBackStuck(deployment, obj.DeletionTimestamp.Time)
				if stuck == "" {
					msg := fmt.Sprintf("Deployment %s has %d of %d replicas available; the Rollout keeps serving until it has all",
						deployment.Name, deployment.Status.AvailableReplicas, want)
					conditions.Delete(obj, meta.StalledCondition)
					conditions.MarkReconciling(obj, deliveryv1.HandoverReason, "%s", msg)
					conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.HandoverReason, "%s", msg)
					// The Deployment watch brings the Delivery back when
					// the Deployment's available replicas change.
					return ctrl.Result{RequeueAfter: retry}, nil
				}
				msg := fmt.Sprintf("Deployment %s has %d of %d replicas available and gets no more: %s. The Rollout keeps serving: give the namespace the quota or the nodes the capacity the Deployment needs, or hand back with what it has: kubectl -n %s annotate delivery %s %s=%s",
					deployment.Name, deployment.Status.AvailableReplicas, want, stuck, obj.Namespace, obj.Name, HandBackAnnotation, HandBackForce)
				if conditions.GetMessage(obj, meta.StalledCondition) != msg {
					r.event(obj, corev1.EventTypeWarning, deliveryv1.HandBackStalledReason, msg)
				}
				conditions.MarkStalled(obj, deliveryv1.HandBackStalledReason, "%s", msg)
				conditions.MarkFalse(obj, meta.ReadyCondition, deliveryv1.HandBackStalledReason, "%s", msg)
				conditions.Delete(obj, meta.ReconcilingCondition)
				return ctrl.Result{RequeueAfter: jitter.JitteredIntervalDuration(obj.GetRequeueAfter())}, nil
			}
		}
	}

	if owned {
		if done, result, err := r.removeRollout(ctx, rollout); !done {
			return result, err
		}
	}
	if deployment.Name != "" {
		r.event(obj, corev1.EventTypeNormal, deliveryv1.HandoverReason,
			fmt.Sprintf("handed back to Deployment %s with %d available replicas", deployment.Name, deployment.Status.AvailableReplicas))
	}
	recordPhase(obj, true)
	controllerutil.RemoveFinalizer(obj, deliveryv1.DeliveryFinalizer)
	return ctrl.Result{}, nil
}

// HandBackAnnotation set to HandBackForce on a Delivery that is being
// removed hands the app back to its Deployment without waiting for the
// Deployment's replicas: the way out when they cannot be had.
const (
	HandBackAnnotation = "sluice.dev/hand-back"
	HandBackForce      = "force"
)

// handBackStuck tells why a Deployment taking the app back since since
// will not get its replicas without a person's help, from what its
// controller reports (a quota or an admission refusing its pods, its
// progress deadline exceeded) or, when it reports nothing, from its
// progress deadline having passed; empty, with when to look again, while
// it may still get them.
func handBackStuck(d *appsv1.Deployment, since time.Time) (string, time.Duration) {
	for _, c := range d.Status.Conditions {
		switch {
		case c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue:
			return fmt.Sprintf("%s: %s", c.Reason, c.Message), 0
		case c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded":
			return fmt.Sprintf("%s: %s", c.Reason, c.Message), 0
		}
	}
	deadline := time.Duration(ptr.Deref(d.Spec.ProgressDeadlineSeconds, 600)) * time.Second
	if waited := time.Since(since); waited < deadline {
		return "", deadline - waited
	}
	return fmt.Sprintf("its pods are not available after %s, its progress deadline", deadline), 0
}

// handBackFinalizer keeps a Rollout that is being deleted, and so its pods,
// until sluice has released the Services it switched.
const handBackFinalizer = "delivery.sluice.dev/hand-back"

// handBackSettle is how long a Rollout marked for deletion waits before the
// Services are released: long enough for Argo Rollouts to have seen the
// mark, after which it no longer reconciles the Rollout.
const handBackSettle = 2 * time.Second

// removeRollout deletes the Rollout without a moment at which the Services
// it switched select only its terminating pods. Argo Rollouts reconciles a
// Rollout, and puts its hash back in the Services' selectors, until the
// Rollout is marked for deletion; so the Rollout is marked first, held by a
// finalizer of sluice's with its pods running, then the Services are
// released, then the Rollout goes. done is false while that is under way.
func (r *DeliveryReconciler) removeRollout(ctx context.Context, rollout *rolloutsv1.Rollout) (done bool, _ ctrl.Result, _ error) {
	if rollout.DeletionTimestamp.IsZero() {
		if controllerutil.AddFinalizer(rollout, handBackFinalizer) {
			if err := r.Update(ctx, rollout); err != nil {
				return false, ctrl.Result{}, fmt.Errorf("holding Rollout %s for the hand-back: %w", rollout.Name, err)
			}
		}
		if err := r.Delete(ctx, rollout); client.IgnoreNotFound(err) != nil {
			return false, ctrl.Result{}, fmt.Errorf("deleting Rollout: %w", err)
		}
		return false, ctrl.Result{RequeueAfter: handBackSettle}, nil
	}
	if wait := handBackSettle - time.Since(rollout.DeletionTimestamp.Time); wait > 0 {
		return false, ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.releaseServices(ctx, rollout); err != nil {
		return false, ctrl.Result{}, err
	}
	if controllerutil.RemoveFinalizer(rollout, handBackFinalizer) {
		if err := r.Update(ctx, rollout); client.IgnoreNotFound(err) != nil {
			return false, ctrl.Result{}, fmt.Errorf("releasing Rollout %s: %w", rollout.Name, err)
		}
	}
	return true, ctrl.Result{}, nil
}

// servingReplicas is what the app serves with: the Delivery's replicas, or
// more when an autoscaler scaled the Rollout up (owned says the Rollout is
// the Delivery's). The Deployment takes that many back.
func servingReplicas(obj *deliveryv1.Delivery, rollout *rolloutsv1.Rollout, owned bool) int32 {
	want := obj.GetReplicas()
	if owned {
		want = max(want, ptr.Deref(rollout.Spec.Replicas, 0))
	}
	return want
}

// releaseServicesPatch takes Argo Rollouts' pod-template hash out of a
// Service's selector, as Argo does once no Rollout references the Service.
var releaseServicesPatch = client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+
	rolloutsv1.ManagedByRolloutsKey+`":null}},"spec":{"selector":{"`+rolloutsv1.DefaultRolloutUniqueLabelKey+`":null}}}`))

// releaseServices points the Services the Rollout switches at every pod of
// the app again, the Deployment's included, before the Rollout goes: Argo
// would do it only after the Rollout is deleted, while its pods terminate,
// and the Services would briefly select fewer pods than the app has.
func (r *DeliveryReconciler) releaseServices(ctx context.Context, rollout *rolloutsv1.Rollout) error {
	var names []string
	if bg := rollout.Spec.Strategy.BlueGreen; bg != nil {
		names = append(names, bg.ActiveService, bg.PreviewService)
	}
	if c := rollout.Spec.Strategy.Canary; c != nil {
		names = append(names, c.StableService, c.CanaryService)
	}
	for _, name := range names {
		if name == "" {
			continue
		}
		svc := &corev1.Service{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rollout.Namespace, Name: name}, svc); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		if _, switched := svc.Spec.Selector[rolloutsv1.DefaultRolloutUniqueLabelKey]; !switched {
			continue
		}
		if err := r.Patch(ctx, svc, releaseServicesPatch, client.FieldOwner(r.ControllerName)); err != nil {
			return fmt.Errorf("releasing Service %s from the Rollout: %w", name, err)
		}
	}
	return nil
}

// deploymentAvailable tells whether the Deployment's controller has seen its
// spec and has want updated, available replicas.
func deploymentAvailable(d *appsv1.Deployment, want int32) bool {
	return d.Status.ObservedGeneration >= d.Generation &&
		d.Status.UpdatedReplicas >= want && d.Status.AvailableReplicas >= want
}
