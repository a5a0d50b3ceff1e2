package controllers

import (
	"errors"
	"strings"
	"testing"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
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

func TestCommitMessage(t *testing.T) {
	data := map[string]any{"Hash": "0123456789", "Action": "promote"}
	if got, err := commitMessage("promote", "", "Promote web\n\n", data); err != nil || got != "Promote web" {
		t.Errorf("without a template: %q, %v; want the default without trailing newlines", got, err)
	}
	if got, err := commitMessage("promote", "Ship {{.Hash}}\n", "default", data); err != nil || got != "Ship 0123456789" {
		t.Errorf("with a template: %q, %v", got, err)
	}
	for _, tmpl := range []string{"Ship {{.Hash", "Ship {{.Delivery.Name}}"} {
		_, err := commitMessage("promote", tmpl, "default", data)
		if !errors.Is(err, gitops.ErrCannotEdit) || !strings.Contains(err.Error(), "the DeliveryPolicy's promote message template") {
			t.Errorf("template %q: %v; want ErrCannotEdit naming the template", tmpl, err)
		}
	}
}
