package controllers

import (
	"context"
	"fmt"
	"strings"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/predicates"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// Index keys that map a watched object back to the Deliveries that refer to
// it.
const (
	deploymentIndexKey = ".spec.deploymentRef.name"
	policyIndexKey     = ".spec.policyRef.name"
)

// DeliveryReconcilerOptions are the controller's tunables.
type DeliveryReconcilerOptions struct {
	MaxConcurrentReconciles int
	RateLimiter             workqueue.TypedRateLimiter[reconcile.Request]
}

// SetupWithManager registers the indexes and watches of the Delivery
// controller: a Delivery is reconciled when its spec changes, when a
// reconcile is requested, and when its Deployment or policy changes.
func (r *DeliveryReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts DeliveryReconcilerOptions) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(ctx, &deliveryv1.Delivery{}, deploymentIndexKey, func(o client.Object) []string {
		return []string{o.(*deliveryv1.Delivery).Spec.DeploymentRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing Deliveries by Deployment: %w", err)
	}
	if err := indexer.IndexField(ctx, &deliveryv1.Delivery{}, policyIndexKey, func(o client.Object) []string {
		if ref := o.(*deliveryv1.Delivery).Spec.PolicyRef; ref != nil {
			return []string{ref.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing Deliveries by DeliveryPolicy: %w", err)
	}

	return ctrl.NewControllerManagedBy(mgr).
		For(&deliveryv1.Delivery{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicates.ReconcileRequestedPredicate{}, gitWriteBackChanged, handBackForced),
		)).
		Owns(&rolloutsv1.Rollout{}).
		Watches(&appsv1.Deployment{},
			handler.EnqueueRequestsFromMapFunc(deliveriesReferring(r.Client, deploymentIndexKey)),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, availableReplicasChanged)),
		).
		Watches(&deliveryv1.DeliveryPolicy{},
			handler.EnqueueRequestsFromMapFunc(deliveriesReferring(r.Client, policyIndexKey)),
			builder.WithPredicates(predicate.GenerationChangedPredicate{}),
		).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
			RateLimiter:             opts.RateLimiter,
		}).
		Complete(r)
}

// availableReplicasChanged passes Deployment updates that change how many
// replicas are available, which a hand-back waits for, or whether its
// controller says it cannot get them, which stalls a hand-back.
var availableReplicasChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		oldD, okOld := e.ObjectOld.(*appsv1.Deployment)
		newD, okNew := e.ObjectNew.(*appsv1.Deployment)
		return okOld && okNew && (oldD.Status.AvailableReplicas != newD.Status.AvailableReplicas ||
			stuckCondition(oldD) != stuckCondition(newD))
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// handBackForced passes a Delivery just annotated to hand back without
// waiting for its Deployment's replicas.
var handBackForced = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectNew.GetAnnotations()[HandBackAnnotation] == HandBackForce &&
			e.ObjectOld.GetAnnotations()[HandBackAnnotation] != HandBackForce
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// stuckCondition is what the Deployment's controller says of pods it
// cannot get, for a hand-back to stall on: its ReplicaFailure and
// Progressing conditions.
func stuckCondition(d *appsv1.Deployment) string {
	var b strings.Builder
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure || c.Type == appsv1.DeploymentProgressing {
			fmt.Fprintf(&b, "%s=%s/%s;", c.Type, c.Status, c.Reason)
		}
	}
	return b.String()
}

// gitWriteBackChanged passes Delivery updates in which the promotion
// controller changed the GitWriteBack condition, which the Delivery
// controller reports.
var gitWriteBackChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okOld := e.ObjectOld.(*deliveryv1.Delivery)
		n, okNew := e.ObjectNew.(*deliveryv1.Delivery)
		if !okOld || !okNew {
			return false
		}
		oc := conditions.Get(o, deliveryv1.GitWriteBackCondition)
		nc := conditions.Get(n, deliveryv1.GitWriteBackCondition)
		return (oc == nil) != (nc == nil) || (oc != nil && (oc.Status != nc.Status || oc.Message != nc.Message))
	},
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// deliveriesReferring maps an object to the Deliveries in its namespace
// whose index key names it.
func deliveriesReferring(c client.Reader, indexKey string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list deliveryv1.DeliveryList
		if err := c.List(ctx, &list, client.InNamespace(obj.GetNamespace()),
			client.MatchingFields{indexKey: obj.GetName()}); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing Deliveries", "index", indexKey)
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return reqs
	}
}
