package controllers

import (
	"context"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// Shard is the part of a fleet one sluice instance reconciles, as Flux's
// controllers shard: the Kustomizations whose labels match Selector
// (--watch-label-selector, sharding.fluxcd.io/key=shard1 say) and what they
// applied. Several instances with disjoint selectors split a fleet without
// two of them ever reconciling, or writing to Git for, the same Delivery.
type Shard struct {
	// Selector picks the shard's Kustomizations; all of them when nil.
	Selector labels.Selector
	// Reader reads Kustomizations from a cache that holds only the
	// shard's.
	Reader client.Reader
}

// all tells whether the shard is the whole fleet.
func (s Shard) all() bool {
	return s.Selector == nil || s.Selector.Empty()
}

// Owns tells whether the Delivery is the shard's: the Kustomization that
// applied it is, or, for a Delivery no Kustomization applied, the shard's
// selector matches a Kustomization without labels (the instance that
// shards nothing away, like Flux's with !sharding.fluxcd.io/key).
func (s Shard) Owns(ctx context.Context, obj *deliveryv1.Delivery) (bool, error) {
	if s.all() {
		return true, nil
	}
	name, ns := obj.Labels[kustomizationNameLabel], obj.Labels[kustomizationNamespaceLabel]
	if name == "" || ns == "" {
		return s.Selector.Matches(labels.Set{}), nil
	}
	ks := &kustomizev1.Kustomization{}
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ks)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, err
	}
	return s.Selector.Matches(labels.Set(ks.Labels)), nil
}
