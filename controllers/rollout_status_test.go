package controllers

import (
	"testing"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

func TestViewRolloutCanaryWeight(t *testing.T) {
	policy := &deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{Steps: []deliveryv1.CanaryStep{
		{SetWeight: ptr.To[int32](20)},
		{Pause: &deliveryv1.PauseStep{}},
		{SetWeight: ptr.To[int32](75)},
	}}}
	for step, want := range map[int32]int32{0: 0, 1: 20, 2: 20, 3: 100} {
		rollout := &rolloutsv1.Rollout{Status: rolloutsv1.RolloutStatus{
			Phase: rolloutsv1.RolloutPhaseProgressing, CurrentStepIndex: ptr.To(step),
		}}
		v := viewRollout(rollout, policy)
		if v.canaryWeight == nil || *v.canaryWeight != want {
			t.Errorf("at step %d the weight is %v, want %d", step, v.canaryWeight, want)
		}
	}
}
