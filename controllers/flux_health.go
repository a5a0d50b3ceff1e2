package controllers

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// +kubebuilder:rbac:groups=kustomize.toolkit.fluxcd.io,resources=kustomizations,verbs=patch

// NOTE: kustomize-controller runs health checks only while it reconciles a
// Kustomization, and its Ready condition keeps the verdict of the last run
// until the next interval. A Delivery changes readiness on its own: a
// Deployment's new template, applied and health checked while the Delivery
// still ran the old one, starts a canary that may wait at a gate for hours.
// Without a request, Flux would go on saying the Kustomization is Ready, and
// Kustomizations that dependsOn it would apply, until its interval.

// healthCheckRequests asks Flux to run the health checks of a Kustomization
// again when one of the Deliveries they cover stops being Ready after they
// passed. A request pending, or made in the last healthCheckRequestTTL,
// serves every Delivery of the Kustomization.
type healthCheckRequests struct {
	mu        sync.Mutex
	requested map[client.ObjectKey]time.Time
}

// healthCheckRequestTTL covers the time the cache takes to show a request.
const healthCheckRequestTTL = 2 * time.Second

// stoppedBeingReady tells whether the reconcile took the Delivery from
// Ready to not Ready.
func stoppedBeingReady(read, obj *deliveryv1.Delivery) bool {
	return conditions.IsTrue(read, meta.ReadyCondition) && !conditions.IsTrue(obj, meta.ReadyCondition)
}

// request asks the Kustomization that applied obj for a reconcile when its
// health checks cover obj and last passed. It tells whether it asked.
func (h *healthCheckRequests) request(ctx context.Context, c client.Client, obj *deliveryv1.Delivery, now time.Time) (bool, error) {
	ks, err := appliedBy(ctx, c, obj)
	if err != nil || ks == nil {
		return false, err
	}
	if !checksHealthOf(ks, obj) || !conditions.IsTrue(ks, meta.ReadyCondition) || requestPending(ks) {
		return false, nil
	}

	key := client.ObjectKeyFromObject(ks)
	h.mu.Lock()
	if at, ok := h.requested[key]; ok && now.Sub(at) < healthCheckRequestTTL {
		h.mu.Unlock()
		return false, nil
	}
	if h.requested == nil {
		h.requested = map[client.ObjectKey]time.Time{}
	}
	for k, at := range h.requested {
		if now.Sub(at) >= healthCheckRequestTTL {
			delete(h.requested, k)
		}
	}
	h.requested[key] = now
	h.mu.Unlock()

	if err := c.Patch(ctx, ks, reconcileRequest()); err != nil {
		h.mu.Lock()
		delete(h.requested, key)
		h.mu.Unlock()
		return false, fmt.Errorf("asking Kustomization %s/%s to check the health of Delivery %s/%s again: %w",
			ks.Namespace, ks.Name, obj.Namespace, obj.Name, err)
	}
	return true, nil
}

// checksHealthOf tells whether Flux health checks obj when it applies ks:
// every object it applies with wait, or those its healthChecks name.
func checksHealthOf(ks *kustomizev1.Kustomization, obj *deliveryv1.Delivery) bool {
	if ks.Spec.Suspend {
		return false
	}
	if ks.Spec.Wait {
		return true
	}
	for _, ref := range ks.Spec.HealthChecks {
		if ref.Kind == deliveryv1.DeliveryKind && ref.Name == obj.Name && cmp.Or(ref.Namespace, ks.Namespace) == obj.Namespace {
			return true
		}
	}
	return false
}

// requestPending tells whether the Kustomization has a reconcile request
// that Flux has not handled yet.
func requestPending(ks *kustomizev1.Kustomization) bool {
	v, ok := meta.ReconcileAnnotationValue(ks.GetAnnotations())
	return ok && v != ks.Status.LastHandledReconcileAt
}
