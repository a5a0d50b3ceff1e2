// Package v1alpha1 contains the API of the delivery.sluice.dev group:
// Delivery, one per Deployment that sluice delivers progressively, and
// DeliveryPolicy, the reusable strategy and Git write-back settings.
//
// +kubebuilder:object:generate=true
// +groupName=delivery.sluice.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "delivery.sluice.dev", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this API to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
