package controllers

import (
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// builtinPolicy is the policy of a Delivery without spec.policyRef.
//
// The canary sends a fifth of the traffic to the candidate, waits for an
// approval merged through Git, then goes to half, waits a minute and
// completes. The blue-green switches the Service named like the Deployment
// once the candidate is ready.
func builtinPolicy(delivery *deliveryv1.Delivery) deliveryv1.DeliveryPolicySpec {
	spec := deliveryv1.DeliveryPolicySpec{
		Git: deliveryv1.GitWriteBack{Rollback: deliveryv1.RollbackRecord},
	}
	switch delivery.Spec.Strategy {
	case deliveryv1.StrategyBlueGreen:
		spec.BlueGreen = &deliveryv1.BlueGreenStrategy{
			ActiveService:         delivery.Spec.DeploymentRef.Name,
			AutoPromotionEnabled:  ptr.To(true),
			ScaleDownDelaySeconds: ptr.To[int32](30),
		}
	default:
		spec.Canary = &deliveryv1.CanaryStrategy{Steps: []deliveryv1.CanaryStep{
			{SetWeight: ptr.To[int32](20)},
			{Pause: &deliveryv1.PauseStep{}},
			{SetWeight: ptr.To[int32](50)},
			{Pause: &deliveryv1.PauseStep{Duration: "1m"}},
		}}
	}
	return spec
}
